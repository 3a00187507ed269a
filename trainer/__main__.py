from mxlaunch.trainer.cli import main

main()
