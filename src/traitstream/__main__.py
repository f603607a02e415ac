from traitstream.cli import main

raise SystemExit(main())
