"""The services' real images: built from the Dockerfile with buildah and run with podman
(runc) as the chart's pod specs run them; tests/e2e/test_pods.py runs the chart's
workloads with `podman kube play`. Needs root, podman, buildah, runc and mmdebstrap
(scripts/test installs them)."""
