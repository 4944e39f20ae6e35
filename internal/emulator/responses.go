package emulator

import (
	"math/rand/v2"
	"net/http"
)

// APIPath is the path of the emulated endpoint.
const APIPath = "/v1/integrations/cohortsync"

// ReplicaHeader is an optional request header the worker may send to name
// the replica that made a request; the emulator records it.
const ReplicaHeader = "X-Cohortsync-Replica"

// The two actions the API accepts (contract §4).
const (
	ActionAdd    = "add_members"
	ActionRemove = "remove_members"
)

// ForbiddenNameChars are the characters no cohort_name may contain, in every
// version of the documentation (contract §5).
const ForbiddenNameChars = "|*?\\:<>=$\""

// Error types used in the "type" field of error responses. Those marked
// [DOC] are copied from contract §7.3; the others are the emulator's choice
// for cases the contract does not document.
const (
	TypeMissingAttribute            = "MissingAttributeError"         // [DOC] 400
	TypeMalformedJSON               = "Malformed JSON"                // [DOC] 400
	TypeBadRequest                  = "Bad Request"                   // 400 invalid value or type (generic type of contract §7.2)
	TypeAuthRequired                = "Authentication required"       // [DOC] 401
	TypeAuthMismatch                = "Authentication Mismatch"       // [DOC] 401
	TypeBlockedClient               = "BlockedClient"                 // [DOC] 403
	TypeAccountSuspended            = "Account Suspended"             // [DOC] 403
	TypeAccountTemporarilySuspended = "Account Temporarily Suspended" // [DOC] 403
	TypeNotFound                    = "Not Found"                     // 404
	TypeMethodNotAllowed            = "Method Not Allowed"            // 405
	TypePayloadTooLarge             = "Payload too large"             // [DOC] 413
	TypeUnsupportedMediaType        = "Unsupported media type"        // [DOC] 415
	TypeRateLimitsExceeded          = "Rate Limits Exceeded"          // [DOC] 429
	TypeServerError                 = "Server Error"                  // [DOC] 500, used for every injected 5xx
)

// Fixed messages of error and success responses, copied from contract §7
// except MessageNotFound and MessageMethodNotAllowed.
const (
	MessageSuccess            = "Your request has been accepted and will be processed soon."
	MessageMalformedJSON      = "Could not decode the request body. The JSON was incorrect or not encoded as UTF-8."
	MessageAuthHeaderRequired = "Authentication Header Required"
	MessageSecretMismatch     = "App Secret key mismatch. Please login to the dashboard to verify key"
	MessageAppKeyMismatch     = "App key mismatch in params and authentication"
	MessageSuspended          = "Your account is suspended. Please contact MoEngage team."
	MessageTempSuspended      = "Your account is temporarily suspended. Please contact MoEngage team."
	MessagePayloadTooLarge    = "Payload can not exceed 128KB"
	MessageUnsupportedMedia   = "Content type is not supported"
	MessageRateLimited        = "Rate limits for customers exceeded. Please Try After Some Time"
	MessageServerError        = "An unexpected error was encountered while processing this request. Please contact MoEngage Team"
	MessageNotFound           = "The requested resource was not found"
	MessageMethodNotAllowed   = "The method is not allowed for the requested URL"
)

// SuccessResponse is the body of a 200 response.
type SuccessResponse struct {
	Status  string `json:"status"`  // "success"
	Message string `json:"message"` // MessageSuccess
}

// ErrorResponse is the body of every error response.
type ErrorResponse struct {
	Status string      `json:"status"` // "fail"
	Error  ErrorDetail `json:"error"`
}

// ErrorDetail is the "error" object of an [ErrorResponse].
type ErrorDetail struct {
	// Attribute names the request attribute at fault; empty (and omitted)
	// for errors that are not about one attribute.
	Attribute string `json:"attribute,omitempty"`
	Message   string `json:"message"`
	Type      string `json:"type"`
	// RequestID is 8 random ASCII letters.
	RequestID string `json:"request_id"`
}

// apiError is an error response before it gets its request ID.
type apiError struct {
	status    int
	typ       string
	message   string
	attribute string
}

var (
	errNotFound         = &apiError{status: http.StatusNotFound, typ: TypeNotFound, message: MessageNotFound}
	errMethodNotAllowed = &apiError{status: http.StatusMethodNotAllowed, typ: TypeMethodNotAllowed, message: MessageMethodNotAllowed}
	errUnsupportedMedia = &apiError{status: http.StatusUnsupportedMediaType, typ: TypeUnsupportedMediaType, message: MessageUnsupportedMedia}
	errPayloadTooLarge  = &apiError{status: http.StatusRequestEntityTooLarge, typ: TypePayloadTooLarge, message: MessagePayloadTooLarge}
	errAuthHeader       = &apiError{status: http.StatusUnauthorized, typ: TypeAuthRequired, message: MessageAuthHeaderRequired}
	errSecretMismatch   = &apiError{status: http.StatusUnauthorized, typ: TypeAuthRequired, message: MessageSecretMismatch}
	errAppKeyMismatch   = &apiError{status: http.StatusUnauthorized, typ: TypeAuthMismatch, message: MessageAppKeyMismatch}
	errRateLimited      = &apiError{status: http.StatusTooManyRequests, typ: TypeRateLimitsExceeded, message: MessageRateLimited}
	errMalformedJSON    = &apiError{status: http.StatusBadRequest, typ: TypeMalformedJSON, message: MessageMalformedJSON}
)

// missingAttribute is the documented 400 for a missing field, generalised to
// every required attribute (contract §7.3).
func missingAttribute(name string) *apiError {
	return &apiError{
		status:    http.StatusBadRequest,
		typ:       TypeMissingAttribute,
		message:   name + " is not found in the payload",
		attribute: name,
	}
}

// badAttribute is the emulator's 400 for a present but invalid field.
func badAttribute(name, message string) *apiError {
	return &apiError{status: http.StatusBadRequest, typ: TypeBadRequest, message: message, attribute: name}
}

// forbiddenError is the 403 body for a Faults.ForbiddenVariant.
func forbiddenError(variant string) *apiError {
	switch variant {
	case ForbiddenBlocked:
		return &apiError{status: http.StatusForbidden, typ: TypeBlockedClient, message: MessageSuspended}
	case ForbiddenTemporarilySuspended:
		return &apiError{status: http.StatusForbidden, typ: TypeAccountTemporarilySuspended, message: MessageTempSuspended}
	default:
		return &apiError{status: http.StatusForbidden, typ: TypeAccountSuspended, message: MessageSuspended}
	}
}

// serverError is the documented 500 body, sent with any 5xx status.
func serverError(status int) *apiError {
	return &apiError{status: status, typ: TypeServerError, message: MessageServerError}
}

const letters = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz"

// newRequestID returns 8 random ASCII letters, like the documented examples.
func newRequestID() string {
	var b [8]byte
	for i := range b {
		b[i] = letters[rand.IntN(len(letters))]
	}
	return string(b[:])
}
