#!/usr/bin/env bash
# For each package: the version installed in .venv-newest and the newest on the index; when they
# differ, why pip could not take the newest (e.g. a dependency the index lacks).
set -u
python=.venv-newest/bin/python
for package in "$@"; do
    installed=$($python -c "import importlib.metadata as m; print(m.version('$package'))")
    newest=$($python -m pip index versions "$package" 2>/dev/null | sed -n '1s/.*(\(.*\))/\1/p')
    if [ -z "$newest" ] || [ "$newest" = "$installed" ]; then
        echo "$package $installed (the newest on the index)"
    else
        reason=$($python -m pip install --dry-run -q "$package==$newest" 2>&1 | grep -m1 '^ERROR' | sed 's/ (from versions:.*//' || true)
        echo "$package $installed; the index's newest, $newest, does not install here: ${reason:-see pip}"
    fi
done
