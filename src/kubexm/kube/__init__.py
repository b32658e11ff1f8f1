"""Kubernetes itself: kubeadm configuration, command lines, health."""
