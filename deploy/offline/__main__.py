import sys

from deploy.offline.images import main

sys.exit(main(sys.argv[1:]))
