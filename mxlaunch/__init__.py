"""mxlaunch: take Apache MXNet training from one machine to a GPU cluster on AWS, and back.

One installed package; the build maps the repository's folders into it. Its floors, top to bottom (a module
imports from its own floor or a lower one; tests/test_layers.py keeps it so):

    mxlaunch.launcher.cli        every command: `launch ...`, `launch cluster ...`
    mxlaunch.launcher.jobs       plan, run, watch, restart and record a parameter-server job
    mxlaunch.infra.cloud         EC2 + EFS: a cluster spec in, a running cluster out
    mxlaunch.infra.transport     hosts, the SSH connection, role runners   |  mxlaunch.trainer (the trainer)
    mxlaunch.infra.transport.remote   programs sent to the hosts (standard library only)
    mxlaunch, mxlaunch.templates the base: exit statuses, one-line errors, CUDA facts, the GPU library loader,
                                 files written safely, and the text of every rendered file

Modules of the base:

  cuda      CUDA facts shared by the trainer and the cluster catalog (compute capabilities the wheel runs)
  errors    CommandError / UsageError and run_cli: one line and a specific exit status, never a traceback
  exits     the exit statuses, one enum
  files     files where another user may have been first: written and read never through a link, read bounded
  gpu_libs  lets `import mxnet` of the GPU build find the CUDA libraries of NVIDIA's pip wheels
  records   records as data: a frozen dataclass is a file's shape, written and checked by one definition
"""