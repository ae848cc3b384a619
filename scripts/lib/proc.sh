# Process checks shared by the stack scripts (sourced, not run).
#
# Exited daemons can linger as zombies until init reaps them, and a zombie still
# answers `kill -0`; these checks read /proc so a zombie counts as gone.

# alive PID: the process exists and is not a zombie.
alive() {
  local stat
  read -r stat 2>/dev/null <"/proc/$1/stat" || return 1
  [[ "${stat##*) }" != Z* ]]
}

# pid_of FILE COMM: prints the pid on FILE's first line if it is a live process named
# COMM. Checking the name guards against a stale pid file whose pid was reused.
pid_of() {
  local file="$1" comm="$2" pid
  [[ -r "$file" ]] || return 1
  pid="$(head -n 1 "$file" 2>/dev/null || true)"
  [[ "$pid" =~ ^[0-9]+$ ]] || return 1
  alive "$pid" || return 1
  [[ "$(cat "/proc/$pid/comm" 2>/dev/null || true)" == "$comm" ]] || return 1
  echo "$pid"
}
