"""The trainer: `trainer fit`, `trainer fine-tune` and `trainer data`, MXNet 1.9's image-classification scripts
with their option names and defaults. It imports nothing of the launcher; the launcher asks `contract` what a
command line means.

  architecture  a word when --network/--num-layers/--num-group/--bottleneck-width are not used
  cli           the click commands and the process's entry point (logging, roles, exit statuses)
  config        FitConfig: what one training run is asked to do
  configure     parsed options -> FitConfig, refusing in one line what cannot train as asked
  contract      what a trainer command line means, for the launcher (no MXNet)
  data          training and validation batches: ImageRecordIter as common/data.py sets it, or synthetic
  datasets      `trainer data cifar10|digits`: public data sets -> RecordIO
  evaluation    accuracy, top-k and losses, counted as mx.metric counts them
  fit           the training loop: Module, kvstore, schedule, checkpoints, logs and metrics
  index         the .idx of a training .rec, made when it has none
  metrics_file  metrics.jsonl: one record per epoch, kept across runs
  model         checkpoints in MXNet's format, and fine-tuning's classifier swap
  optim         the optimizer, its parameters and the initializer, as common/fit.py builds them
  options       every option of fit and fine-tune, with each command's default and the deliberate differences
  profiling     MXNet's profiler per role (--profile-worker-suffix, --profile-server-suffix)
  ps_scheduler  the scheduler role of a dist_* job, on MXNet's library without its Python package
  records       RecordIO files: written, and checked before MXNet reads them
  schedule      the learning-rate schedule, counted in updates of the job
  starting      where a run starts: a new network, its own checkpoint or a pretrained one
  stop          SIGUSR1: checkpoint now and stop
  networks      ResNet and ResNeXt as MXNet's symbols build them
"""
