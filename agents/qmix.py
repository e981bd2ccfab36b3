"""VDN and QMIX over slates (work in progress)."""
