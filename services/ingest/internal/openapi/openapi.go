// Package openapi describes Hookline's public HTTP API (CONTRACT 2) as an
// OpenAPI 3.1 document, built from the route table below so that a test can
// hold it against the routes the services really register.
package openapi

import (
	"encoding/json"
	"net/http"
	"strconv"
	"strings"

	"github.com/hookline/hookline/pkg/version"
)

// Path is where ingest serves the document. It needs no token.
const Path = "/v1/openapi.json"

// Services that serve the routes.
const (
	Ingest     = "hookline-ingest"
	Deadletter = "hookline-deadletter"
)

// Route is one operation of the public API.
type Route struct {
	Method, Path string
	// Service is the service that serves it ([Ingest] or [Deadletter]).
	Service string
	ID      string // operationId
	Summary string
	Tag     string
	// Admin routes answer 403 to tenant API keys; Public ones need no token.
	Admin, Public bool
	Query         []string // names in components.parameters
	Header        []string // names in components.parameters
	Body          string   // request schema in components.schemas
	Status        int      // success status
	Response      string   // success schema; "" for no body
	// Alt is a second success answer (a dry run's 200).
	AltStatus   int
	AltResponse string
}

const t = "/v1/tenants/{tenant}"

// Routes is every operation of the public API, in document order.
var Routes = []Route{
	{Method: "GET", Path: Path, Service: Ingest, ID: "getOpenAPI", Summary: "This document", Tag: "meta", Public: true, Status: 200, Response: "OpenAPIDocument"},

	{Method: "POST", Path: "/v1/tenants", Service: Ingest, ID: "createTenant", Summary: "Create a tenant", Tag: "tenants", Admin: true, Body: "TenantInput", Status: 201, Response: "Tenant"},
	{Method: "GET", Path: "/v1/tenants", Service: Ingest, ID: "listTenants", Summary: "List tenants", Tag: "tenants", Admin: true, Query: []string{"limit", "cursor"}, Status: 200, Response: "TenantList"},
	{Method: "GET", Path: "/v1/tenants/{tenant}", Service: Ingest, ID: "getTenant", Summary: "Get a tenant", Tag: "tenants", Admin: true, Status: 200, Response: "Tenant"},
	{Method: "DELETE", Path: "/v1/tenants/{tenant}", Service: Ingest, ID: "deleteTenant", Summary: "Delete a tenant with its keys, endpoints and events", Tag: "tenants", Admin: true, Status: 204},
	{Method: "POST", Path: t + "/api-keys", Service: Ingest, ID: "createAPIKey", Summary: "Create an API key; its token is shown only here", Tag: "tenants", Admin: true, Body: "APIKeyInput", Status: 201, Response: "APIKeyCreated"},
	{Method: "GET", Path: t + "/api-keys", Service: Ingest, ID: "listAPIKeys", Summary: "List API keys (without tokens)", Tag: "tenants", Admin: true, Query: []string{"limit", "cursor"}, Status: 200, Response: "APIKeyList"},
	{Method: "DELETE", Path: t + "/api-keys/{id}", Service: Ingest, ID: "revokeAPIKey", Summary: "Revoke an API key at once", Tag: "tenants", Admin: true, Status: 204},

	{Method: "POST", Path: t + "/endpoints", Service: Ingest, ID: "createEndpoint", Summary: "Create an endpoint", Tag: "endpoints", Body: "EndpointInput", Status: 201, Response: "EndpointWithSecret"},
	{Method: "GET", Path: t + "/endpoints", Service: Ingest, ID: "listEndpoints", Summary: "List endpoints", Tag: "endpoints", Query: []string{"limit", "cursor"}, Status: 200, Response: "EndpointList"},
	{Method: "GET", Path: t + "/endpoints/{id}", Service: Ingest, ID: "getEndpoint", Summary: "Get an endpoint with its secret and health", Tag: "endpoints", Status: 200, Response: "EndpointWithSecret"},
	{Method: "PATCH", Path: t + "/endpoints/{id}", Service: Ingest, ID: "updateEndpoint", Summary: "Change any field of an endpoint; null resets a field to its default", Tag: "endpoints", Body: "EndpointInput", Status: 200, Response: "EndpointWithSecret"},
	{Method: "DELETE", Path: t + "/endpoints/{id}", Service: Ingest, ID: "deleteEndpoint", Summary: "Delete an endpoint; its pending deliveries are dead-lettered (endpoint_deleted)", Tag: "endpoints", Status: 204},
	{Method: "POST", Path: t + "/endpoints/{id}/secret/rotate", Service: Ingest, ID: "rotateEndpointSecret", Summary: "Rotate the signing secret; both are used until the previous one expires", Tag: "endpoints", Body: "SecretRotateInput", Status: 200, Response: "SecretRotated"},
	{Method: "POST", Path: t + "/endpoints/{id}/test", Service: Ingest, ID: "testEndpoint", Summary: "Send a hookline.test event to this endpoint only", Tag: "endpoints", Status: 202, Response: "TestEventAccepted"},
	{Method: "GET", Path: t + "/endpoints/{id}/attempts", Service: Ingest, ID: "listEndpointAttempts", Summary: "The endpoint's attempt log, newest first", Tag: "endpoints", Query: []string{"limit", "cursor", "attemptStatus", "since", "until"}, Status: 200, Response: "AttemptList"},

	{Method: "POST", Path: t + "/events", Service: Ingest, ID: "createEvent", Summary: "Accept an event (durable when answered 202)", Tag: "events", Header: []string{"Idempotency-Key"}, Body: "EventInput", Status: 202, Response: "EventAccepted"},
	{Method: "POST", Path: t + "/events/batch", Service: Ingest, ID: "createEventBatch", Summary: "Accept up to 500 events; each item succeeds or fails alone", Tag: "events", Body: "EventBatchInput", Status: 202, Response: "EventBatchResult"},
	{Method: "GET", Path: t + "/events", Service: Ingest, ID: "listEvents", Summary: "List events, newest first", Tag: "events", Query: []string{"limit", "cursor", "type", "since", "until"}, Status: 200, Response: "EventList"},
	{Method: "GET", Path: t + "/events/{id}", Service: Ingest, ID: "getEvent", Summary: "Get an event with its delivery to each matched endpoint", Tag: "events", Status: 200, Response: "EventWithDeliveries"},
	{Method: "GET", Path: "/v1/rejected-events", Service: Ingest, ID: "listRejectedEvents", Summary: "NATS messages that failed validation, newest first", Tag: "events", Admin: true, Query: []string{"limit", "cursor", "tenantFilter", "rejectReason"}, Status: 200, Response: "RejectedEventList"},

	{Method: "POST", Path: t + "/sources", Service: Ingest, ID: "createSource", Summary: "Create an inbound webhook source; its ingest_url is shown only here and on token rotation", Tag: "sources", Body: "SourceInput", Status: 201, Response: "Source"},
	{Method: "GET", Path: t + "/sources", Service: Ingest, ID: "listSources", Summary: "List sources", Tag: "sources", Query: []string{"limit", "cursor"}, Status: 200, Response: "SourceList"},
	{Method: "GET", Path: t + "/sources/{id}", Service: Ingest, ID: "getSource", Summary: "Get a source (secrets are write-only)", Tag: "sources", Status: 200, Response: "Source"},
	{Method: "PATCH", Path: t + "/sources/{id}", Service: Ingest, ID: "updateSource", Summary: "Change a source's name, verifier, mapping, filter or format", Tag: "sources", Body: "SourceInput", Status: 200, Response: "Source"},
	{Method: "DELETE", Path: t + "/sources/{id}", Service: Ingest, ID: "deleteSource", Summary: "Delete a source; its ingest URL answers 404 at once", Tag: "sources", Status: 204},
	{Method: "POST", Path: t + "/sources/{id}/secret/rotate", Service: Ingest, ID: "rotateSourceSecret", Summary: "Rotate the verifier secret; both are accepted until the previous one expires", Tag: "sources", Body: "SourceSecretRotateInput", Status: 200, Response: "SourceSecretRotated"},
	{Method: "POST", Path: t + "/sources/{id}/token/rotate", Service: Ingest, ID: "rotateSourceToken", Summary: "Replace the ingest token; the old URL answers 404 at once", Tag: "sources", Status: 200, Response: "Source"},
	{Method: "GET", Path: t + "/sources/{id}/rejects", Service: Ingest, ID: "listSourceRejects", Summary: "Requests the source refused, filtered or found duplicate, newest first", Tag: "sources", Query: []string{"limit", "cursor", "rejectReason"}, Status: 200, Response: "SourceRejectList"},
	{Method: "POST", Path: "/v1/in/{source_token}", Service: Ingest, ID: "receiveWebhook", Summary: "Receive a third-party webhook for a source (no bearer token: the source's verifier authenticates it)", Tag: "sources", Public: true, Status: 202, Response: "InboundAccepted", AltStatus: 200, AltResponse: "InboundAccepted"},

	{Method: "GET", Path: t + "/dead-letters", Service: Deadletter, ID: "listDeadLetters", Summary: "List dead letters, newest first", Tag: "dead letters", Query: []string{"limit", "cursor", "endpoint_id", "event_type", "reason", "since", "until", "include_resolved"}, Status: 200, Response: "DeadLetterList"},
	{Method: "GET", Path: t + "/dead-letters/{id}", Service: Deadletter, ID: "getDeadLetter", Summary: "Get a dead letter with its payload and attempt history", Tag: "dead letters", Status: 200, Response: "DeadLetterDetail"},
	{Method: "DELETE", Path: t + "/dead-letters/{id}", Service: Deadletter, ID: "discardDeadLetter", Summary: "Discard a dead letter", Tag: "dead letters", Status: 204},
	{Method: "POST", Path: t + "/dead-letters/{id}/replay", Service: Deadletter, ID: "replayDeadLetter", Summary: "Replay one dead letter", Tag: "dead letters", Status: 202, Response: "ReplayRef"},
	{Method: "POST", Path: t + "/replays", Service: Deadletter, ID: "createReplay", Summary: "Replay the dead letters a filter matches (or count them: dry_run)", Tag: "replays", Body: "ReplayInput", Status: 202, Response: "Replay", AltStatus: 200, AltResponse: "DryRun"},
	{Method: "GET", Path: t + "/replays", Service: Deadletter, ID: "listReplays", Summary: "List replays, newest first", Tag: "replays", Query: []string{"limit", "cursor"}, Status: 200, Response: "ReplayList"},
	{Method: "GET", Path: t + "/replays/{id}", Service: Deadletter, ID: "getReplay", Summary: "Get a replay's progress", Tag: "replays", Status: 200, Response: "Replay"},
	{Method: "DELETE", Path: t + "/replays/{id}", Service: Deadletter, ID: "cancelReplay", Summary: "Cancel a running replay", Tag: "replays", Status: 200, Response: "Replay"},
}

type obj = map[string]any

func ref(kind, name string) obj { return obj{"$ref": "#/components/" + kind + "/" + name} }

func schemaRef(name string) obj { return ref("schemas", name) }

// Document returns the OpenAPI 3.1 document.
func Document() obj {
	paths := obj{}
	for _, r := range Routes {
		item, _ := paths[r.Path].(obj)
		if item == nil {
			item = obj{}
			paths[r.Path] = item
		}
		item[strings.ToLower(r.Method)] = operation(r)
	}
	return obj{
		"openapi":           "3.1.0",
		"jsonSchemaDialect": "https://spec.openapis.org/oas/3.1/dialect/base",
		"info": obj{
			"title":   "Hookline API",
			"version": version.Version,
			"summary": "Self-hosted outbound webhooks: tenants, endpoints, events, dead letters and replays.",
			"description": "Every route but this document needs `Authorization: Bearer <token>`: the admin token, or a tenant API key, " +
				"which acts only inside its own tenant (other tenants' resources answer 404, admin-only routes 403, a missing or wrong token 401). " +
				"hookline-ingest serves every route except those under /dead-letters and /replays, which hookline-deadletter serves " +
				"(the `x-hookline-service` of each operation). Errors are application/problem+json (RFC 9457). " +
				"Lists take `limit` (default 50, clamped to 500) and an opaque `cursor`. Times are RFC 3339 in UTC; absent values are null.",
			"license": obj{"name": "Apache-2.0", "identifier": "Apache-2.0"},
		},
		"servers":    []any{obj{"url": "http://127.0.0.1:8080", "description": "make run"}},
		"security":   []any{obj{"bearer": []any{}}},
		"tags":       tags(),
		"paths":      paths,
		"components": components(),
	}
}

// JSON returns the document encoded.
func JSON() []byte {
	b, err := json.MarshalIndent(Document(), "", "  ")
	if err != nil {
		panic(err) // a static document: a failure is a programming error
	}
	return b
}

func tags() []any {
	var out []any
	seen := map[string]bool{}
	for _, r := range Routes {
		if !seen[r.Tag] {
			seen[r.Tag] = true
			out = append(out, obj{"name": r.Tag})
		}
	}
	return out
}

func operation(r Route) obj {
	op := obj{
		"operationId":        r.ID,
		"summary":            r.Summary,
		"tags":               []any{r.Tag},
		"x-hookline-service": r.Service,
	}
	var params []any
	if strings.Contains(r.Path, "{tenant}") {
		params = append(params, ref("parameters", "tenant"))
	}
	if strings.HasSuffix(r.Path, "{id}") || strings.Contains(r.Path, "{id}/") {
		params = append(params, obj{"name": "id", "in": "path", "required": true, "schema": obj{"type": "string"}})
	}
	if strings.Contains(r.Path, "{source_token}") {
		params = append(params, obj{"name": "source_token", "in": "path", "required": true, "schema": obj{"type": "string"},
			"description": "the source's ingest token (hlsrc_…)"})
	}
	for _, q := range r.Query {
		params = append(params, ref("parameters", q))
	}
	for _, h := range r.Header {
		params = append(params, ref("parameters", h))
	}
	if len(params) > 0 {
		op["parameters"] = params
	}
	if r.Body != "" {
		op["requestBody"] = obj{
			"required": r.Method != "POST" || !optionalBody[r.Body],
			"content":  obj{"application/json": obj{"schema": schemaRef(r.Body)}},
		}
	}
	resp := obj{}
	resp[strconv.Itoa(r.Status)] = success(r.Status, r.Response)
	if r.AltStatus != 0 {
		resp[strconv.Itoa(r.AltStatus)] = success(r.AltStatus, r.AltResponse)
	}
	if r.Public {
		op["security"] = []any{}
		if strings.Contains(r.Path, "{source_token}") {
			op["description"] = "Answers 202 once the event is durable (200 when the source's filter drops it), " +
				"401 on a missing or wrong signature or a stale timestamp, 400 on a body that is not what the source declares, " +
				"422 when the mapping gives no valid event type, 413 over the size limit, 404 for an unknown token, " +
				"405 for any method but POST. Every refusal is recorded (GET .../sources/{id}/rejects)."
			for code, name := range map[string]string{"400": "BadRequest", "401": "Unauthorized", "404": "NotFound", "405": "MethodNotAllowed",
				"413": "TooLarge", "422": "Invalid", "503": "Unavailable"} {
				resp[code] = ref("responses", name)
			}
		}
	} else {
		resp["401"] = ref("responses", "Unauthorized")
		resp["404"] = ref("responses", "NotFound")
		if r.Admin {
			resp["403"] = ref("responses", "Forbidden")
			op["description"] = "Admin token only; a tenant API key gets 403."
		}
		if r.Body != "" || len(r.Query) > 0 || r.Header != nil {
			resp["422"] = ref("responses", "Invalid")
		}
		if r.Body != "" {
			resp["400"] = ref("responses", "BadRequest")
			resp["413"] = ref("responses", "TooLarge")
		}
		if r.Path == "/v1/tenants" && r.Method == "POST" {
			resp["409"] = ref("responses", "Conflict")
		}
		resp["503"] = ref("responses", "Unavailable")
	}
	op["responses"] = resp
	return op
}

// optionalBody lists request bodies that may be left out.
var optionalBody = map[string]bool{"SecretRotateInput": true, "ReplayInput": true, "APIKeyInput": true}

func success(status int, schema string) obj {
	if schema == "" {
		return obj{"description": http.StatusText(status)}
	}
	return obj{
		"description": http.StatusText(status),
		"content":     obj{"application/json": obj{"schema": schemaRef(schema)}},
	}
}
