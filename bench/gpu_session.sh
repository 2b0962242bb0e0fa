#!/usr/bin/env bash
# What a session lent a GPU runs first, prepared so that one call of the device tool does it all:
#
#   here:   bash bench/gpu_session.sh wheels      # .whl/: what hpo and pytest import, pinned to .venv
#   there:  run(command="bash bench/gpu_session.sh run", carry=[".whl"], timeout_s=590)
#
# On the GPU host (Python 3.12, torch with CUDA, no Ray, no internet) each step runs under its own
# time limit, in the order the open work needs its figures, and writes what it printed to $OUT:
# a step that runs long is cut off and the next ones still run. Record what comes back in
# docs/benchmarks.md with the device it names. At most about 9 minutes in all.
set -u
SPECS="optuna mlflow-skinny mnist1d sqlalchemy alembic click rich pydantic pyyaml cloudpickle psycopg2-binary filelock
pytest"

case "${1:-}" in
wheels)
  pins=$(.venv/bin/pip freeze | tr 'A-Z_' 'a-z-')
  pinned=()
  for spec in $SPECS; do
    pinned+=("$(echo "$pins" | grep -m1 "^$spec==" || echo "$spec")")
  done
  exec ../shared/tools/wheelhouse.sh "${pinned[@]}"
  ;;
run)
  out=${OUT:-gpu-out}
  mkdir -p "$out"
  rm -rf /tmp/site  # left by an earlier call on a machine still warm
  python3 -m pip install -q --no-index --no-deps --target /tmp/site .whl/*.whl || exit 1
  export PYTHONPATH=/tmp/site:$PWD HPO_CACHE_DIR=/tmp/hpo-cache
  nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv > "$out/device.txt" 2>&1
  python3 -c "import sys, torch; print(sys.version.split()[0], torch.__version__)" >> "$out/device.txt" 2>&1
  step() {  # step SECONDS NAME COMMAND...: its output in $OUT/NAME.txt, its exit status last
    local limit=$1 name=$2
    shift 2
    local started=$SECONDS
    timeout -k 10 "$limit" "$@" > "$out/$name.txt" 2>&1  # killed 10 s after, if it has not ended
    echo "exit $? after $((SECONDS - started)) s (limit $limit s)" >> "$out/$name.txt"
    echo "== $name: $(tail -1 "$out/$name.txt")"
  }
  step 150 test_gpu python3 -m pytest -q -p no:cacheprovider tests/test_gpu.py
  step 130 population_mlp python3 bench/population.py --objective mnist1d_mlp --spaces full --no-ray --ks 128 1024
  step 130 population_cnn python3 bench/population.py --objective mnist1d_cnn --spaces full --no-ray --ks 128 1024
  step 80 throughput_cnn python3 bench/gpu_throughput.py --objective mnist1d_cnn --ks 1 4 16
  ;;
*)
  echo "usage: bash bench/gpu_session.sh wheels|run" >&2
  exit 2
  ;;
esac
