from elvisor.cli import main

raise SystemExit(main())
