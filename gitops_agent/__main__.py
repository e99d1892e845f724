import sys

from gitops_agent.cli.main import main

sys.exit(main())
