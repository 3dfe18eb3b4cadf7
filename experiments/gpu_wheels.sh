#!/usr/bin/env bash
# The wheels bench_gpu.sh needs on a GPU machine that has PyTorch, transformers and Lightning but
# not the project's configuration stack (Hydra, OmegaConf, pydantic), and no network to fetch them:
# run this where pip reaches PyPI, copy DIR along with the repository, and bench_gpu.sh installs
# them from there when it finds them missing. The versions are the ones this environment runs
# (what the tests pass with); the Python version and platform are the GPU machine's.
#
#   bash experiments/gpu_wheels.sh [DIR]        # default DIR: .whl (git-ignored)
#   TARGET_PYTHON=3.11 bash experiments/gpu_wheels.sh DIR   # for another Python than 3.12
set -euo pipefail
cd "$(dirname "$0")/.."
if [ -x .venv/bin/python ]; then default_python=.venv/bin/python; else default_python=python3; fi
PYTHON=${PYTHON:-$default_python}
TARGET_PYTHON=${TARGET_PYTHON:-3.12}
dir=${1:-.whl}
mkdir -p "$dir"

# what importing hypermoe's config and MoE layers needs beyond the GPU image's packages, pinned
binary=(hydra-core omegaconf pydantic pydantic-core annotated-types typing-inspection typing-extensions)
source_only=(antlr4-python3-runtime)  # published as a source archive only
pins() {  # NAME...: NAME==VERSION for each, the version this environment runs
    $PYTHON -c "import importlib.metadata as m, sys; print(*(f'{n}=={m.version(n)}' for n in sys.argv[1:]))" "$@"
}
pinned=$(pins "${binary[@]}")  # an assignment of its own: a package not installed here stops the script (set -e)
read -ra binary <<< "$pinned"
pinned=$(pins "${source_only[@]}")
read -ra source_only <<< "$pinned"
echo "wheels for Python $TARGET_PYTHON on x86_64 Linux: ${binary[*]} ${source_only[*]}"

platforms=()
for tag in manylinux_2_28 manylinux_2_27 manylinux_2_17 manylinux2014 manylinux1; do
    platforms+=(--platform "${tag}_x86_64")
done
$PYTHON -m pip download --quiet --no-deps --only-binary=:all: --python-version "$TARGET_PYTHON" \
    --implementation cp "${platforms[@]}" -d "$dir" "${binary[@]}"
# a pure-Python package: the wheel built here installs on any Python 3
$PYTHON -m pip wheel --quiet --no-deps -w "$dir" "${source_only[@]}"
ls "$dir"
