"""recstudio_edge command line: ``python run.py -m=<Model> -d=<dataset> [--key=value ...]``."""
from recstudio_edge.cli import main

if __name__ == "__main__":
    main()
