"""MAPPO and IPPO over slates (work in progress)."""
