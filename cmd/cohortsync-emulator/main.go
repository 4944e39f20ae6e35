// Command cohortsync-emulator serves an emulation of MoEngage's Cohort Sync
// API (POST /v1/integrations/cohortsync) and its admin API under
// /_emulator/, for tests, demos and staging setups. See package
// internal/emulator for the behaviour.
//
// It serves one workspace or several: --credentials, --credentials-file
// and --workspaces-dir (the worker's MOENGAGE_WORKSPACES_DIR layout:
// <workspace_id>.key, optional <workspace_id>.rate_limit_rpm) together give
// the workspaces; each has its own key, rate limit, segments and faults, and
// /_emulator/workspaces/{id} adds, revokes, restores and faults one at run
// time.
//
// Every flag can also be set with an environment variable named EMULATOR_
// followed by the flag name in upper snake case (--rate-limit is
// EMULATOR_RATE_LIMIT); a flag given on the command line wins. Logs go to
// stderr; the first line after start is "listening addr=<host:port>".
package main

import "os"

func main() {
	os.Exit(run(os.Args[1:], os.Getenv, os.Stdout, os.Stderr))
}
