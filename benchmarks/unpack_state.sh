# Sourced by the *_reports.sh scripts: unpack the packed queue $1 into a temporary HAARES_HOME (removed
# on exit) and point HAARES_HOME / HAARES_DB at it, so the reports read it and nothing else.
work=$(mktemp -d); trap 'rm -rf "$work"' EXIT
export HAARES_HOME=$work/home HAARES_DB=sqlite:///$work/home/queue.db
haares unpack "${1:?state.tgz}"
