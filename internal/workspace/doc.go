// Package workspace is the registry of MoEngage workspaces a worker serves
// (MOENGAGE_WORKSPACES_DIR): which workspaces exist, their Data API keys,
// data centers and budgets, kept up to date without a restart.
//
// # Layout
//
// A flat directory, as Kubernetes mounts a Secret or a projected volume
// (Secret + ConfigMap):
//
//	<workspace_id>.key             Data API key (required: no key, no workspace)
//	<workspace_id>.dc              data center (optional; default Options.DefaultDC)
//	<workspace_id>.rate_limit_rpm  budget, requests/min > 0 (optional; default Options.DefaultRPM)
//
// A workspace ID is 1 to 128 ASCII letters, digits, '_' or '-', starting
// with a letter or digit (ValidID): every MoEngage workspace ID, and
// file-name safe. Dot files are ignored, the kubelet's ..data,
// ..data_tmp and ..<timestamp> entries among them. Any other name (an
// invalid ID, an unknown suffix, a subdirectory) is a Problem and is
// otherwise ignored. A key file is trimmed of trailing newlines (as the
// *_FILE secrets are); .dc and .rate_limit_rpm of surrounding white space.
//
// # Reading it
//
// When ..data is a symlink (the kubelet's layout), the registry reads the
// version it points to, a complete set of files the kubelet never modifies
// once published (it writes the next version beside it, points ..data_tmp
// at it and renames ..data_tmp over ..data). So every poll costs one
// readlink, a key and its data center changed together are seen together,
// and the top-level symlinks (created and removed by the kubelet after the
// swap) are not needed. A version is kept only if ..data still points to it
// after it was read; else it is read again.
//
// Any other directory is listed and each file stat'ed at every poll
// (symlinks followed: a dangling one is a removed file). A file whose size,
// modification time or inode changed is read at the next poll that sees the
// same signature, so a file caught being written is not taken (write
// files with a rename for rotations to be atomic anyway); a removed file
// counts as removed once two polls agree. Open reads every file at once and
// each again at the first poll, in case one was rewritten in the clock tick
// of the first read.
//
// # Guarantees
//
//   - Open fails if the directory cannot be listed; afterwards a directory
//     that cannot be listed keeps every workspace as it was (a Problem).
//   - Adding, removing a workspace, rotating its key, changing its data
//     center or budget takes effect within 2 × Options.Interval (default
//     1 s) plus a reload (about 30 ms for 1,000 workspaces): within 5 s.
//     Each change is a new generation (Generation), published atomically
//     (Snapshot) and then announced (Options.OnChange) with what changed.
//   - A file that exists but cannot be used (empty or half-written,
//     control characters, unreadable, an invalid data center or budget)
//     keeps its workspace's last good value, or keeps a new workspace out
//     until it is fixed; it is a Problem (logged, Options.OnProblem,
//     Problems) and touches no other workspace. Only a removed key file
//     removes a workspace.
//   - Keys never appear in errors, logs or a printed Workspace.
//
// # What it does not do
//
// It does not validate the defaults, know the base URL, limit rates or
// decide what happens to a workspace's changes while it is missing: the
// worker wires it into the sink (KeyFunc as sink.Config.APIKeyFunc), the
// budget and the routing.
package workspace
