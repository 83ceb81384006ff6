# The settings of issue 19's runs from the generic initialisation, shared by cub100_init.sh and
# cub100_init_extras.sh (sourced from the repository root; every variable can be set from outside).
PYTHON=${PYTHON:-.venv/bin/python}
OUT=${OUT:-benchmarks/results/cub100_init}
RUNS=${RUNS:-outputs/bench/cub100_init}
METHODS=${METHODS:-moco,fgssl,fgssl-random,simsiam,simsiam-fgssl,lcr}
SEEDS=${SEEDS:-0,1,2}
INIT=${INIT:-outputs/bench/generic_init/resnet-s16-cpu-sup-e18-lr0.002-s0/backbone}
TITLE=${TITLE:-"cub100 from the generic initialisation (tinyimagenet200, resnet-s16-cpu, 64 px, 2 CPU cores)"}
