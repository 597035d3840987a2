#!/bin/sh
# install_nodes.sh LIST DEST PYTHON
# Clone every "name url commit [requirements]" line of LIST into DEST/name at exactly that
# commit (a shallow fetch of the SHA; GitHub serves reachable commits by id) and install its
# requirements into PYTHON's environment. Fails the build on the first error.
set -eu
list="$1"
dest="$2"
python="$3"
grep -v -E '^[[:space:]]*(#|$)' "$list" | while read -r name url commit reqs; do
    case "$commit" in
        *[!0-9a-f]* | "") echo "$name: commit '$commit' is not a 40-hex SHA" >&2; exit 1 ;;
    esac
    [ "${#commit}" -eq 40 ] || { echo "$name: commit must have 40 hex digits" >&2; exit 1; }
    echo "installing $name at $commit"
    git init -q "$dest/$name"
    git -C "$dest/$name" fetch -q --depth 1 "$url" "$commit"
    git -C "$dest/$name" checkout -q FETCH_HEAD
    req="$dest/$name/${reqs:-requirements.txt}"
    if [ -f "$req" ]; then
        uv pip install --python "$python" -r "$req"
    fi
    rm -rf "$dest/$name/.git"
done
