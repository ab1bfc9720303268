"""Stand-ins for the official images where no container registry answers: `make offline-images`
(`python -m deploy.offline`). The Dockerfiles and entrypoints are the files next to this one; `images.py` builds
them and tells compose to use them."""
