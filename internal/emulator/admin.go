package emulator

import (
	"encoding/json"
	"fmt"
	"net/http"
	"strconv"
	"strings"
)

// AdminPrefix is the path prefix of the admin API. The admin API needs no
// authentication and speaks JSON:
//
//	GET    /_emulator/healthz   {"status":"ok"}
//	GET    /_emulator/segments  {"segments":[Segment…]}; optional filters ?workspace=&partner=&cohort_id=
//	GET    /_emulator/requests  {"requests":[RequestRecord…],"last_seq":N,"dropped":N}; ?since=<seq> keeps Seq > since
//	GET    /_emulator/faults    the active Faults
//	PUT    /_emulator/faults    replace the Faults (body: Faults; answers the new Faults; 400 if invalid)
//	POST   /_emulator/reset     Emulator.Reset
//	GET    /_emulator/users     {"enabled":bool,"users":{workspace:[uid…]}}
//	POST   /_emulator/users     seed the user store: {"workspace_id":…,"uids":[…],"replace":bool}
//	DELETE /_emulator/users     disable the user store
//
// These endpoints act on every workspace: the segments and requests of all
// (filter with ?workspace=), and the emulator-wide faults, which apply to
// every workspace without faults of its own. With one workspace they are
// that workspace's. Per workspace ({id} path-escaped):
//
//	GET    /_emulator/workspaces                 {"workspaces":[WorkspaceInfo…]} (keys are never shown)
//	GET    /_emulator/workspaces/{id}            WorkspaceInfo; 404 if not served
//	PUT    /_emulator/workspaces/{id}            add it, or rotate its key (body: Workspace); answers WorkspaceInfo
//	DELETE /_emulator/workspaces/{id}            stop serving it (401 from then on); segments are kept
//	POST   /_emulator/workspaces/{id}/revoke     revoke its key (401 "App Secret key mismatch")
//	POST   /_emulator/workspaces/{id}/restore    restore a revoked key
//	GET    /_emulator/workspaces/{id}/faults     the faults in force for it
//	PUT    /_emulator/workspaces/{id}/faults     give it its own faults (body: Faults)
//	DELETE /_emulator/workspaces/{id}/faults     drop its own faults: the emulator-wide faults apply again
//	GET    /_emulator/workspaces/{id}/segments   {"segments":[…]} of that workspace; ?partner=&cohort_id=
//	GET    /_emulator/workspaces/{id}/requests   {"requests":[…],…} naming that workspace; ?since=<seq>
//
// Errors are {"error":"<message>"} with 400, 404 or 405.
const AdminPrefix = "/_emulator/"

// maxAdminBody bounds admin request bodies (user seeds can be large).
const maxAdminBody = 64 << 20

// SegmentsResponse is the body of GET /_emulator/segments.
type SegmentsResponse struct {
	Segments []Segment `json:"segments"`
}

// RequestsResponse is the body of GET /_emulator/requests.
type RequestsResponse struct {
	Requests []RequestRecord `json:"requests"`
	// LastSeq is the Seq of the newest record ever logged, kept or not.
	LastSeq uint64 `json:"last_seq"`
	// Dropped counts records dropped to keep the log within its bounds.
	Dropped uint64 `json:"dropped"`
}

// UsersRequest is the body of POST /_emulator/users.
type UsersRequest struct {
	Workspace string   `json:"workspace_id"`
	UIDs      []string `json:"uids"`
	// Replace replaces the workspace's known uids instead of adding to them.
	Replace bool `json:"replace"`
}

// UsersResponse is the body of GET /_emulator/users.
type UsersResponse struct {
	Enabled bool                `json:"enabled"`
	Users   map[string][]string `json:"users"`
}

type adminError struct {
	Error string `json:"error"`
}

func (e *Emulator) serveAdmin(w http.ResponseWriter, r *http.Request) {
	route := strings.TrimPrefix(strings.TrimPrefix(r.URL.Path, strings.TrimSuffix(AdminPrefix, "/")), "/")
	switch route {
	case "healthz":
		if allow(w, r, http.MethodGet) {
			writeJSON(w, http.StatusOK, map[string]string{"status": "ok"})
		}
	case "segments":
		if allow(w, r, http.MethodGet) {
			e.adminSegments(w, r)
		}
	case "requests":
		if allow(w, r, http.MethodGet) {
			e.adminRequests(w, r)
		}
	case "faults":
		if allow(w, r, http.MethodGet, http.MethodPut) {
			e.adminFaults(w, r)
		}
	case "reset":
		if allow(w, r, http.MethodPost) {
			e.Reset()
			writeJSON(w, http.StatusOK, map[string]string{"status": "ok"})
		}
	case "users":
		if allow(w, r, http.MethodGet, http.MethodPost, http.MethodDelete) {
			e.adminUsers(w, r)
		}
	default:
		if route == "workspaces" || strings.HasPrefix(route, "workspaces/") {
			e.serveAdminWorkspaces(w, r)
			return
		}
		writeJSON(w, http.StatusNotFound, adminError{Error: "unknown admin endpoint " + r.URL.Path})
	}
}

// allow answers 405 with an Allow header unless r uses one of methods.
func allow(w http.ResponseWriter, r *http.Request, methods ...string) bool {
	for _, m := range methods {
		if r.Method == m {
			return true
		}
	}
	w.Header().Set("Allow", strings.Join(methods, ", "))
	writeJSON(w, http.StatusMethodNotAllowed, adminError{Error: "method " + r.Method + " not allowed"})
	return false
}

func (e *Emulator) adminSegments(w http.ResponseWriter, r *http.Request) {
	e.writeSegments(w, r, r.URL.Query().Get("workspace"))
}

// writeSegments answers with the segments of workspace ws ("" for every
// workspace), filtered by the partner and cohort_id query parameters.
func (e *Emulator) writeSegments(w http.ResponseWriter, r *http.Request, ws string) {
	q := r.URL.Query()
	partner, id := q.Get("partner"), q.Get("cohort_id")
	out := []Segment{}
	for _, s := range e.Segments() {
		if (ws == "" || s.Workspace == ws) && (partner == "" || s.Partner == partner) && (id == "" || s.CohortID == id) {
			out = append(out, s)
		}
	}
	writeJSON(w, http.StatusOK, SegmentsResponse{Segments: out})
}

func (e *Emulator) adminRequests(w http.ResponseWriter, r *http.Request) {
	e.writeRequests(w, r, "")
}

// writeRequests answers with the request log after the since query
// parameter, only workspace ws's requests unless ws is "".
func (e *Emulator) writeRequests(w http.ResponseWriter, r *http.Request, ws string) {
	var since uint64
	if s := r.URL.Query().Get("since"); s != "" {
		v, err := strconv.ParseUint(s, 10, 64)
		if err != nil {
			writeJSON(w, http.StatusBadRequest, adminError{Error: fmt.Sprintf("since %q is not a sequence number", s)})
			return
		}
		since = v
	}
	e.mu.Lock()
	resp := RequestsResponse{Requests: e.reqlog.since(since), LastSeq: e.reqlog.lastSeq, Dropped: e.reqlog.dropped}
	e.mu.Unlock()
	if ws != "" {
		all := resp.Requests
		resp.Requests = []RequestRecord{}
		for _, rec := range all {
			if rec.Workspace == ws {
				resp.Requests = append(resp.Requests, rec)
			}
		}
	}
	writeJSON(w, http.StatusOK, resp)
}

func (e *Emulator) adminFaults(w http.ResponseWriter, r *http.Request) {
	if r.Method == http.MethodPut {
		var f Faults
		if err := decodeAdminBody(w, r, &f); err != nil {
			writeJSON(w, http.StatusBadRequest, adminError{Error: "faults: " + err.Error()})
			return
		}
		if err := e.SetFaults(f); err != nil {
			writeJSON(w, http.StatusBadRequest, adminError{Error: err.Error()})
			return
		}
	}
	writeJSON(w, http.StatusOK, e.Faults())
}

func (e *Emulator) adminUsers(w http.ResponseWriter, r *http.Request) {
	switch r.Method {
	case http.MethodPost:
		var req UsersRequest
		if err := decodeAdminBody(w, r, &req); err != nil {
			writeJSON(w, http.StatusBadRequest, adminError{Error: "users: " + err.Error()})
			return
		}
		if req.Workspace == "" {
			writeJSON(w, http.StatusBadRequest, adminError{Error: "users: workspace_id is required"})
			return
		}
		e.SeedUsers(req.Workspace, req.UIDs, req.Replace)
		e.log.Info("users seeded", "workspace", req.Workspace, "uids", len(req.UIDs), "replace", req.Replace)
	case http.MethodDelete:
		e.DisableUserStore()
		e.log.Info("user store disabled")
	}
	users := e.Users()
	resp := UsersResponse{Enabled: users != nil, Users: users}
	if resp.Users == nil {
		resp.Users = map[string][]string{}
	}
	writeJSON(w, http.StatusOK, resp)
}

// decodeAdminBody decodes one JSON value, rejecting unknown fields.
func decodeAdminBody(w http.ResponseWriter, r *http.Request, v any) error {
	dec := json.NewDecoder(http.MaxBytesReader(w, r.Body, maxAdminBody))
	dec.DisallowUnknownFields()
	return dec.Decode(v)
}
