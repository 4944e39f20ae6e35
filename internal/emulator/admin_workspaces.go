package emulator

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"net/url"
	"strconv"
	"strings"
)

// WorkspacesResponse is the body of GET /_emulator/workspaces.
type WorkspacesResponse struct {
	Workspaces []WorkspaceInfo `json:"workspaces"`
}

// serveAdminWorkspaces serves /_emulator/workspaces and everything under it.
func (e *Emulator) serveAdminWorkspaces(w http.ResponseWriter, r *http.Request) {
	rest := strings.TrimPrefix(strings.TrimPrefix(r.URL.EscapedPath(), AdminPrefix), "workspaces")
	rest = strings.TrimPrefix(rest, "/")
	if rest == "" {
		if allow(w, r, http.MethodGet) {
			writeJSON(w, http.StatusOK, WorkspacesResponse{Workspaces: e.Workspaces()})
		}
		return
	}
	rawID, sub, _ := strings.Cut(rest, "/")
	id, err := url.PathUnescape(rawID)
	if err != nil || id == "" || strings.Contains(sub, "/") {
		writeJSON(w, http.StatusNotFound, adminError{Error: "unknown admin endpoint " + r.URL.Path})
		return
	}
	switch sub {
	case "":
		if allow(w, r, http.MethodGet, http.MethodPut, http.MethodDelete) {
			e.adminWorkspace(w, r, id)
		}
	case "revoke", "restore":
		if allow(w, r, http.MethodPost) {
			e.adminRevoke(w, id, sub == "revoke")
		}
	case "faults":
		if allow(w, r, http.MethodGet, http.MethodPut, http.MethodDelete) {
			e.adminWorkspaceFaults(w, r, id)
		}
	case "segments":
		if allow(w, r, http.MethodGet) {
			e.adminWorkspaceSegments(w, r, id)
		}
	case "requests":
		if allow(w, r, http.MethodGet) {
			e.adminWorkspaceRequests(w, r, id)
		}
	default:
		writeJSON(w, http.StatusNotFound, adminError{Error: "unknown admin endpoint " + r.URL.Path})
	}
}

// workspaceInfo returns the WorkspaceInfo of id, if it is served.
func (e *Emulator) workspaceInfo(id string) (WorkspaceInfo, bool) {
	for _, info := range e.Workspaces() {
		if info.ID == id {
			return info, true
		}
	}
	return WorkspaceInfo{}, false
}

func writeUnknownWorkspace(w http.ResponseWriter, id string) {
	writeJSON(w, http.StatusNotFound, adminError{Error: fmt.Sprintf("unknown workspace %q", id)})
}

func (e *Emulator) adminWorkspace(w http.ResponseWriter, r *http.Request, id string) {
	switch r.Method {
	case http.MethodPut:
		var ws Workspace
		if err := decodeAdminBody(w, r, &ws); err != nil {
			writeJSON(w, http.StatusBadRequest, adminError{Error: "workspace: " + err.Error()})
			return
		}
		if err := e.AddWorkspace(id, ws); err != nil {
			writeJSON(w, http.StatusBadRequest, adminError{Error: err.Error()})
			return
		}
	case http.MethodDelete:
		if !e.RemoveWorkspace(id) {
			writeUnknownWorkspace(w, id)
			return
		}
		writeJSON(w, http.StatusOK, map[string]string{"status": "ok"})
		return
	}
	info, ok := e.workspaceInfo(id)
	if !ok {
		writeUnknownWorkspace(w, id)
		return
	}
	writeJSON(w, http.StatusOK, info)
}

func (e *Emulator) adminRevoke(w http.ResponseWriter, id string, revoke bool) {
	var err error
	if revoke {
		err = e.RevokeKey(id)
	} else {
		err = e.RestoreKey(id)
	}
	if err != nil {
		writeUnknownWorkspace(w, id)
		return
	}
	info, _ := e.workspaceInfo(id)
	writeJSON(w, http.StatusOK, info)
}

func (e *Emulator) adminWorkspaceFaults(w http.ResponseWriter, r *http.Request, id string) {
	var err error
	switch r.Method {
	case http.MethodPut:
		var f Faults
		if derr := decodeAdminBody(w, r, &f); derr != nil {
			writeJSON(w, http.StatusBadRequest, adminError{Error: "faults: " + derr.Error()})
			return
		}
		err = e.SetWorkspaceFaults(id, &f)
	case http.MethodDelete:
		err = e.SetWorkspaceFaults(id, nil)
	default:
		if _, ok := e.workspaceInfo(id); !ok {
			err = fmt.Errorf("%w %q", ErrUnknownWorkspace, id)
		}
	}
	switch {
	case errors.Is(err, ErrUnknownWorkspace):
		writeUnknownWorkspace(w, id)
		return
	case err != nil:
		writeJSON(w, http.StatusBadRequest, adminError{Error: err.Error()})
		return
	}
	f, _ := e.WorkspaceFaults(id)
	writeJSON(w, http.StatusOK, f)
}

func (e *Emulator) adminWorkspaceSegments(w http.ResponseWriter, r *http.Request, id string) {
	e.writeSegments(w, r, id)
}

func (e *Emulator) adminWorkspaceRequests(w http.ResponseWriter, r *http.Request, id string) {
	e.writeRequests(w, r, id)
}

// wsRoute is the admin route of workspace id, plus sub when not empty.
func wsRoute(id, sub string) string {
	route := "workspaces/" + url.PathEscape(id)
	if sub != "" {
		route += "/" + sub
	}
	return route
}

// Workspaces returns the workspaces served, sorted by ID.
func (c *AdminClient) Workspaces(ctx context.Context) ([]WorkspaceInfo, error) {
	var resp WorkspacesResponse
	if err := c.do(ctx, http.MethodGet, "workspaces", nil, &resp); err != nil {
		return nil, err
	}
	return resp.Workspaces, nil
}

// AddWorkspace adds workspace id, or rotates its key (see [Emulator.AddWorkspace]).
func (c *AdminClient) AddWorkspace(ctx context.Context, id string, w Workspace) error {
	return c.do(ctx, http.MethodPut, wsRoute(id, ""), w, nil)
}

// RemoveWorkspace stops serving workspace id.
func (c *AdminClient) RemoveWorkspace(ctx context.Context, id string) error {
	return c.do(ctx, http.MethodDelete, wsRoute(id, ""), nil, nil)
}

// RevokeKey revokes the key of workspace id (401 until restored).
func (c *AdminClient) RevokeKey(ctx context.Context, id string) error {
	return c.do(ctx, http.MethodPost, wsRoute(id, "revoke"), nil, nil)
}

// RestoreKey restores the revoked key of workspace id.
func (c *AdminClient) RestoreKey(ctx context.Context, id string) error {
	return c.do(ctx, http.MethodPost, wsRoute(id, "restore"), nil, nil)
}

// SetWorkspaceFaults gives workspace id its own faults; nil drops them, so
// that the emulator-wide faults apply again.
func (c *AdminClient) SetWorkspaceFaults(ctx context.Context, id string, f *Faults) error {
	if f == nil {
		return c.do(ctx, http.MethodDelete, wsRoute(id, "faults"), nil, nil)
	}
	return c.do(ctx, http.MethodPut, wsRoute(id, "faults"), *f, nil)
}

// WorkspaceSegments returns the segments of workspace id.
func (c *AdminClient) WorkspaceSegments(ctx context.Context, id string) ([]Segment, error) {
	var resp SegmentsResponse
	if err := c.do(ctx, http.MethodGet, wsRoute(id, "segments"), nil, &resp); err != nil {
		return nil, err
	}
	return resp.Segments, nil
}

// WorkspaceRequests returns the kept request records naming workspace id
// with Seq > since, oldest first.
func (c *AdminClient) WorkspaceRequests(ctx context.Context, id string, since uint64) ([]RequestRecord, error) {
	var resp RequestsResponse
	route := wsRoute(id, "requests") + "?since=" + strconv.FormatUint(since, 10)
	if err := c.do(ctx, http.MethodGet, route, nil, &resp); err != nil {
		return nil, err
	}
	return resp.Requests, nil
}
