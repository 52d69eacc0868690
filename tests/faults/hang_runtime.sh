#!/bin/sh
# An OCI runtime whose "create" never returns, like a gVisor sandbox wedged while starting; every
# other command is runc's. It loops instead of exec'ing sleep, so its own command line (which holds
# the container's id) stays the process that hangs.
for arg in "$@"; do
  if [ "$arg" = create ]; then
    while :; do sleep 1; done
  fi
done
exec runc "$@"
