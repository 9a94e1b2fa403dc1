"""memsig's Hydra configs. This folder is shipped inside the package as `memsig.conf` (through
the link src/memsig/conf), so an installed memsig finds them at Hydra's `pkg://memsig.conf`."""
