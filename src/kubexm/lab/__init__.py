"""kubexm lab: real Debian nodes (systemd, sshd, own address) booted with systemd-nspawn on this machine.

For trying kubexm and for its end-to-end tests. Nothing else in kubexm imports this package.
"""
