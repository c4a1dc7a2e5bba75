# Sourced by the device commands: install the carried wheels and set PYTHONPATH and the output flags.
# Needs: out (the results folder) and py (the interpreter). WHEELS: the wheel folder [.whl], empty to
# install nothing; SITE: where they go [/tmp/site]. Sets: wheels, the folder used (empty if none).
wheels=${WHEELS-.whl}
site=${SITE:-/tmp/site}
if [ -n "$wheels" ]; then
  echo "installing $(ls "$wheels"/*.whl | wc -l) wheels from $wheels into $site" | tee -a "$out/run.log"
  "$py" -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target "$site" \
    "$wheels"/*.whl >>"$out/run.log" 2>&1 || { tail -20 "$out/run.log"; echo "wheel install failed"; exit 3; }
  export PYTHONPATH="$site${PYTHONPATH:+:$PYTHONPATH}"
fi
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}" PYTHONUNBUFFERED=1 MPLBACKEND=Agg
