#!/bin/sh
# Lets the image behave like NGC's (`docker run IMAGE tritonserver --flags`) and like a plain
# `tritonserver` entrypoint (`docker run IMAGE --flags`): a leading flag means "run tritonserver".
set -e
if [ "$#" -eq 0 ] || [ "${1#-}" != "$1" ]; then
    set -- tritonserver "$@"
fi
exec "$@"
