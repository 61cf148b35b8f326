"""`python -m segue`: run the operator against the current KUBECONFIG or in-cluster config."""

from segue.controller.main import main

if __name__ == "__main__":
    raise SystemExit(main())
