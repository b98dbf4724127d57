from rmd_dev.emulator.main import main

raise SystemExit(main())
