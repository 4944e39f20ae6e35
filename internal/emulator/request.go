package emulator

import (
	"bytes"
	"encoding/json"
	"fmt"
	"strings"
	"unicode/utf8"
)

// cohortRequest is a request body that passed validation. Fields of a body
// that failed validation are filled as far as they could be read, for the
// request log.
type cohortRequest struct {
	Action         string
	Partner        string
	CohortName     string
	CohortID       string
	Description    string
	HasDescription bool
	Members        []string
}

// validator holds the validation policy taken from Config.
type validator struct {
	leadingPeriod string
	strict        bool
}

var nullJSON = []byte("null")

// parse decodes and validates body. It never panics; it returns the parsed
// request (partially filled on error) and the 400 to answer, if any.
//
// The result is always the one of [validator.parseSlow], which defines the
// semantics. Well-formed bodies, such as the ones the worker sends, are
// decoded by [validator.parseFast] instead, at a fraction of the cost; every
// body it is not sure about, and so every invalid body, goes to parseSlow.
// body is not retained: the request's strings do not share its memory.
func (v validator) parse(body []byte) (cohortRequest, *apiError) {
	if req, ok := v.parseFast(body); ok {
		return req, nil
	}
	return v.parseSlow(body)
}

// parseSlow is the reference decoder behind [validator.parse]: it defines
// which bodies are valid, what they decode to, and the 400 for each problem.
//
// Objects are decoded into map[string]json.RawMessage rather than structs so
// that key matching is exact (encoding/json matches struct fields without
// regard to case) and so that missing, null and mistyped fields can be told
// apart. For a duplicated key the last value wins, as in encoding/json.
func (v validator) parseSlow(body []byte) (cohortRequest, *apiError) {
	var req cohortRequest
	if !utf8.Valid(body) || !json.Valid(body) {
		return req, errMalformedJSON
	}
	if t := bytes.TrimLeft(body, " \t\r\n"); len(t) == 0 || t[0] != '{' {
		return req, errMalformedJSON
	}
	var top map[string]json.RawMessage
	if err := json.Unmarshal(body, &top); err != nil {
		return req, errMalformedJSON
	}

	var aerr *apiError
	if req.Action, aerr = stringField(top, "action"); aerr != nil {
		return req, aerr
	}
	if aerr = checkAction(req.Action); aerr != nil {
		return req, aerr
	}
	if req.Partner, aerr = requiredString(top, "partner"); aerr != nil {
		return req, aerr
	}
	params, aerr := requiredObject(top, "parameters")
	if aerr != nil {
		return req, aerr
	}
	if req.CohortName, aerr = requiredString(params, "cohort_name"); aerr != nil {
		return req, aerr
	}
	if aerr = v.checkName(req.CohortName); aerr != nil {
		return req, aerr
	}
	if req.CohortID, aerr = requiredString(params, "cohort_id"); aerr != nil {
		return req, aerr
	}
	if raw, ok := params["cohort_description"]; ok && !isNull(raw) {
		if err := json.Unmarshal(raw, &req.Description); err != nil {
			return req, badAttribute("cohort_description", "cohort_description must be a string")
		}
		req.HasDescription = true
	}
	members, aerr := requiredArray(params, "members")
	if aerr != nil {
		return req, aerr
	}
	if aerr = checkMemberCount(len(members)); aerr != nil {
		return req, aerr
	}
	req.Members = make([]string, 0, len(members))
	for i, raw := range members {
		var m map[string]json.RawMessage
		if !isObject(raw) || json.Unmarshal(raw, &m) != nil {
			return req, badAttribute("members", fmt.Sprintf("members[%d] must be an object", i))
		}
		uid, aerr := requiredString(m, "uid")
		if aerr != nil {
			return req, aerr
		}
		if v.strict {
			for k := range m {
				if k != "uid" {
					return req, badAttribute("members", fmt.Sprintf("members[%d] has unknown attribute %q", i, k))
				}
			}
		}
		req.Members = append(req.Members, uid)
	}
	return req, nil
}

// The value checks below are shared by parseSlow and parseFast, so that
// both accept exactly the same values.

// checkAction accepts the two actions of contract §4.
func checkAction(action string) *apiError {
	if action != ActionAdd && action != ActionRemove {
		return badAttribute("action", "action must be one of add_members, remove_members")
	}
	return nil
}

// checkNonEmpty rejects an empty value of the required string attribute
// name.
func checkNonEmpty(name, value string) *apiError {
	if value == "" {
		return badAttribute(name, name+" must not be empty")
	}
	return nil
}

// checkMemberCount rejects an empty members array.
func checkMemberCount(n int) *apiError {
	if n == 0 {
		return badAttribute("members", "members must not be empty")
	}
	return nil
}

// checkName applies the cohort_name rules of contract §5.
func (v validator) checkName(name string) *apiError {
	if strings.ContainsAny(name, ForbiddenNameChars) {
		return badAttribute("cohort_name", `cohort_name must not contain any of the characters | * ? \ : < > = $ "`)
	}
	if v.strict && strings.ContainsAny(name, "()") {
		return badAttribute("cohort_name", "cohort_name must not contain parentheses")
	}
	switch v.leadingPeriod {
	case LeadingPeriodRequire:
		if !strings.HasPrefix(name, ".") {
			return badAttribute("cohort_name", "cohort_name must start with a period (.)")
		}
	case LeadingPeriodIgnore:
	default:
		if strings.HasPrefix(name, ".") {
			return badAttribute("cohort_name", "cohort_name must not start with a period (.)")
		}
	}
	return nil
}

// requiredString reads obj[name] as a non-empty string.
func requiredString(obj map[string]json.RawMessage, name string) (string, *apiError) {
	s, aerr := stringField(obj, name)
	if aerr == nil {
		aerr = checkNonEmpty(name, s)
	}
	return s, aerr
}

// stringField reads obj[name] as a string, possibly empty.
func stringField(obj map[string]json.RawMessage, name string) (string, *apiError) {
	raw, ok := obj[name]
	if !ok || isNull(raw) {
		return "", missingAttribute(name)
	}
	var s string
	if err := json.Unmarshal(raw, &s); err != nil {
		return "", badAttribute(name, name+" must be a string")
	}
	return s, nil
}

// requiredObject reads obj[name] as a JSON object.
func requiredObject(obj map[string]json.RawMessage, name string) (map[string]json.RawMessage, *apiError) {
	raw, ok := obj[name]
	if !ok || isNull(raw) {
		return nil, missingAttribute(name)
	}
	var m map[string]json.RawMessage
	if !isObject(raw) || json.Unmarshal(raw, &m) != nil {
		return nil, badAttribute(name, name+" must be an object")
	}
	return m, nil
}

// requiredArray reads obj[name] as a JSON array.
func requiredArray(obj map[string]json.RawMessage, name string) ([]json.RawMessage, *apiError) {
	raw, ok := obj[name]
	if !ok || isNull(raw) {
		return nil, missingAttribute(name)
	}
	var a []json.RawMessage
	if t := bytes.TrimSpace(raw); len(t) == 0 || t[0] != '[' || json.Unmarshal(raw, &a) != nil {
		return nil, badAttribute(name, name+" must be an array")
	}
	return a, nil
}

func isNull(raw json.RawMessage) bool { return bytes.Equal(bytes.TrimSpace(raw), nullJSON) }

func isObject(raw json.RawMessage) bool {
	t := bytes.TrimSpace(raw)
	return len(t) > 0 && t[0] == '{'
}
