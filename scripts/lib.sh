# Shared by the setup scripts (sourced, not run).

# Path of a Python 3.12 interpreter (the Lambda runtime's version): pyenv's 3.12.1 first, else python3.12.
py312() {
  if command -v pyenv >/dev/null 2>&1 && pyenv prefix 3.12.1 >/dev/null 2>&1; then
    echo "$(pyenv prefix 3.12.1)/bin/python3.12"
  elif command -v python3.12 >/dev/null 2>&1; then
    command -v python3.12
  else
    echo "python3.12 not found (install it or pyenv 3.12.1)" >&2
    return 1
  fi
}
