from mxlaunch.launcher.cli import main

main()
