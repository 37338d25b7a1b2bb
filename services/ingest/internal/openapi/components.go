package openapi

import "slices"

// Schema helpers.
func str() obj                { return obj{"type": "string"} }
func strDesc(d string) obj    { return obj{"type": "string", "description": d} }
func nullable(typ string) obj { return obj{"type": []any{typ, "null"}} }
func timeOf() obj             { return obj{"type": "string", "format": "date-time"} }
func nullTime() obj           { return obj{"type": []any{"string", "null"}, "format": "date-time"} }
func integer() obj            { return obj{"type": "integer"} }
func boolean() obj            { return obj{"type": "boolean"} }
func arrayOf(items obj) obj   { return obj{"type": "array", "items": items} }
func enum(v ...any) obj       { return obj{"type": "string", "enum": v} }
func anyJSON(d string) obj    { return obj{"description": d} }

func object(required []string, props obj) obj {
	o := obj{"type": "object", "properties": props, "additionalProperties": false}
	if len(required) > 0 {
		req := make([]any, len(required))
		for i, r := range required {
			req[i] = r
		}
		o["required"] = req
	}
	return o
}

func listOf(item string) obj {
	return object([]string{"data", "next_cursor"}, obj{
		"data":        arrayOf(schemaRef(item)),
		"next_cursor": obj{"type": []any{"string", "null"}, "description": "opaque; null on the last page"},
	})
}

func keysOf(o obj) []string {
	props := o["properties"].(obj)
	out := make([]string, 0, len(props))
	for k := range props {
		out = append(out, k)
	}
	slices.Sort(out)
	return out
}

// all marks every property required (a response shows every field).
func all(o obj) obj {
	req := keysOf(o)
	r := make([]any, len(req))
	for i, k := range req {
		r[i] = k
	}
	o["required"] = r
	return o
}

func param(name, in, desc string, schema obj) obj {
	return obj{"name": name, "in": in, "description": desc, "schema": schema}
}

func problemResponse(desc string) obj {
	return obj{"description": desc, "content": obj{"application/problem+json": obj{"schema": schemaRef("Problem")}}}
}

func endpointFields() obj {
	return obj{
		"url":             obj{"type": "string", "format": "uri", "description": "http or https; private destinations are refused unless HOOKLINE_ALLOW_PRIVATE_DESTINATIONS=true"},
		"description":     obj{"type": "string", "default": "", "maxLength": 1000},
		"event_types":     obj{"type": "array", "items": str(), "default": []any{}, "description": "`order.*` matches one more token, `order.>` one or more; empty: all"},
		"filter":          obj{"type": []any{"string", "null"}, "default": nil, "description": "CEL over type, data and ordering_key; must compile (422)"},
		"headers":         obj{"type": "object", "additionalProperties": str(), "default": obj{}, "description": "may not set webhook-*, content-type or user-agent"},
		"timeout_ms":      obj{"type": "integer", "minimum": 1, "maximum": 60000, "default": 15000},
		"retry_schedule":  obj{"type": "array", "items": strDesc("Go duration, e.g. 5m"), "default": []any{"5s", "5m", "30m", "2h", "5h", "10h", "10h"}, "maxItems": 20},
		"rate_limit":      obj{"type": "integer", "minimum": 0, "default": 0, "description": "requests per second; 0: none"},
		"ordering":        obj{"type": "string", "enum": []any{"key", "none"}, "default": "key"},
		"disabled":        obj{"type": "boolean", "default": false},
		"propagate_trace": obj{"type": "boolean", "default": true},
	}
}

func endpointSchema(withSecret bool) obj {
	props := endpointFields()
	for k, v := range props {
		v := v.(obj)
		c := obj{}
		for kk, vv := range v {
			if kk != "default" {
				c[kk] = vv
			}
		}
		props[k] = c
	}
	props["id"] = strDesc("ep_…")
	props["tenant_id"] = str()
	props["version"] = obj{"type": "integer", "description": "bumped by every change"}
	props["created_at"] = timeOf()
	props["updated_at"] = timeOf()
	if withSecret {
		props["secret"] = strDesc("whsec_ + base64 of 24 to 64 bytes")
		props["health"] = schemaRef("EndpointHealth")
	}
	return all(object(nil, props))
}

func components() obj {
	eventInput := object([]string{"type", "data"}, obj{
		"type":         obj{"type": "string", "pattern": `^[A-Za-z0-9_-]+(\.[A-Za-z0-9_-]+)*$`},
		"data":         anyJSON("any JSON value, at most the configured size (default 1 MiB; 413 beyond)"),
		"id":           obj{"type": "string", "pattern": `^[A-Za-z0-9_-]{1,64}$`, "description": "producer-chosen event id; also the webhook-id"},
		"ordering_key": obj{"type": "string", "maxLength": 256},
	})
	endpointInput := object(nil, endpointFields())
	endpointInput["properties"].(obj)["secret"] = strDesc("whsec_ + base64 of 24 to 64 bytes; generated when absent")
	endpointInput["description"] = "For POST, url is required. For PATCH, any subset; null resets a field to its default."

	return obj{
		"securitySchemes": obj{
			"bearer": obj{"type": "http", "scheme": "bearer", "description": "the admin token or a tenant API key (hlk_…)"},
		},
		"parameters": obj{
			"tenant":           obj{"name": "tenant", "in": "path", "required": true, "schema": obj{"type": "string", "pattern": "^[a-z0-9][a-z0-9_-]{0,62}$"}},
			"limit":            param("limit", "query", "page size; larger values are clamped to 500", obj{"type": "integer", "minimum": 1, "default": 50}),
			"cursor":           param("cursor", "query", "next_cursor of the previous page", str()),
			"since":            param("since", "query", "inclusive lower bound (RFC 3339)", timeOf()),
			"until":            param("until", "query", "exclusive upper bound (RFC 3339)", timeOf()),
			"type":             param("type", "query", "exact event type", str()),
			"attemptStatus":    param("status", "query", "only succeeded or failed attempts", enum("succeeded", "failed")),
			"endpoint_id":      param("endpoint_id", "query", "", str()),
			"event_type":       param("event_type", "query", "", str()),
			"reason":           param("reason", "query", "", enum("exhausted", "non_retryable_status", "endpoint_disabled", "endpoint_deleted", "destination_blocked", "expired")),
			"include_resolved": param("include_resolved", "query", "also list dead letters whose replay was delivered", obj{"type": "boolean", "default": false}),
			"tenantFilter":     param("tenant_id", "query", "only this tenant's rejected messages", str()),
			"rejectReason":     param("reason", "query", "only this rejection reason", str()),
			"Idempotency-Key":  param("Idempotency-Key", "header", "a repeated key answers the first response with duplicate: true and delivers nothing twice", obj{"type": "string", "maxLength": 255}),
		},
		"responses": obj{
			"BadRequest":       problemResponse("malformed JSON"),
			"Unauthorized":     problemResponse("missing or wrong token"),
			"Forbidden":        problemResponse("a tenant API key on an admin-only route"),
			"NotFound":         problemResponse("no such resource, or another tenant's"),
			"Conflict":         problemResponse("already exists"),
			"TooLarge":         problemResponse("request body over the size limit"),
			"Invalid":          problemResponse("validation failed; errors[] names each field"),
			"Unavailable":      problemResponse("a dependency is unreachable; retry after Retry-After seconds"),
			"MethodNotAllowed": problemResponse("only POST is allowed"),
		},
		"schemas": obj{
			"Problem": object([]string{"type", "title", "status", "detail"}, obj{
				"type": obj{"type": "string", "format": "uri"}, "title": str(), "status": integer(), "detail": str(),
				"errors": arrayOf(object([]string{"field", "message"}, obj{"field": str(), "message": str()})),
			}),
			"OpenAPIDocument": obj{"type": "object", "description": "this document"},
			"TenantInput": object([]string{"id"}, obj{
				"id":   obj{"type": "string", "pattern": "^[a-z0-9][a-z0-9_-]{0,62}$"},
				"name": obj{"type": "string", "maxLength": 200, "description": "defaults to the id"},
			}),
			"Tenant":      all(object(nil, obj{"id": str(), "name": str(), "created_at": timeOf()})),
			"TenantList":  listOf("Tenant"),
			"APIKeyInput": object(nil, obj{"name": obj{"type": "string", "maxLength": 200}}),
			"APIKey": all(object(nil, obj{
				"id": strDesc("key_…"), "tenant_id": str(), "name": str(), "created_at": timeOf(), "revoked_at": nullTime(),
			})),
			"APIKeyCreated": all(object(nil, obj{
				"id": strDesc("key_…"), "tenant_id": str(), "name": str(), "created_at": timeOf(), "revoked_at": nullTime(),
				"token": strDesc("shown once; stored only as a hash"),
			})),
			"APIKeyList":         listOf("APIKey"),
			"EndpointInput":      endpointInput,
			"Endpoint":           endpointSchema(false),
			"EndpointWithSecret": endpointSchema(true),
			"EndpointList":       listOf("Endpoint"),
			"EndpointHealth": all(object(nil, obj{
				"success_rate":     obj{"type": []any{"number", "null"}, "minimum": 0, "maximum": 1, "description": "of the last 100 attempts; null before any"},
				"last_status_code": nullable("integer"),
				"last_attempt_at":  nullTime(),
				"circuit":          enum("closed", "open", "half_open"),
				"disabled_at":      nullTime(),
				"disabled_reason":  nullable("string"),
			})),
			"SecretRotateInput": object(nil, obj{
				"secret":        strDesc("the new secret; generated when absent"),
				"grace_seconds": obj{"type": "integer", "minimum": 0, "maximum": 2592000, "default": 86400},
			}),
			"SecretRotated":     all(object(nil, obj{"secret": str(), "previous_secret_expires_at": timeOf()})),
			"TestEventAccepted": all(object(nil, obj{"event_id": str()})),
			"Attempt": all(object(nil, obj{
				"delivery_id": str(), "event_id": str(), "attempt": obj{"type": "integer", "minimum": 1},
				"started_at": timeOf(), "duration_ms": integer(), "status_code": nullable("integer"),
				"error":         obj{"type": []any{"string", "null"}, "description": "null on success; e.g. status 500, timeout, connection refused"},
				"response_body": obj{"type": []any{"string", "null"}, "description": "first 4 KiB"},
				"succeeded":     boolean(),
			})),
			"AttemptList":     listOf("Attempt"),
			"EventInput":      eventInput,
			"EventBatchInput": object([]string{"events"}, obj{"events": obj{"type": "array", "items": schemaRef("EventInput"), "maxItems": 500}}),
			"EventAccepted": all(object(nil, obj{
				"id": str(), "type": str(), "accepted_at": timeOf(), "duplicate": boolean(),
			})),
			"EventBatchResult": all(object(nil, obj{"results": arrayOf(obj{"oneOf": []any{
				schemaRef("EventAccepted"),
				object([]string{"error"}, obj{"error": schemaRef("Problem")}),
			}})})),
			"Event": all(object(nil, obj{
				"id": str(), "type": str(), "data": anyJSON("the event's payload"), "ordering_key": nullable("string"), "accepted_at": timeOf(),
			})),
			"EventList": listOf("Event"),
			"EventWithDeliveries": all(object(nil, obj{
				"id": str(), "type": str(), "data": anyJSON("the event's payload"), "ordering_key": nullable("string"), "accepted_at": timeOf(),
				"deliveries": arrayOf(schemaRef("Delivery")),
			})),
			"Delivery": all(object(nil, obj{
				"endpoint_id": str(), "status": enum("pending", "succeeded", "dead"), "attempts": integer(),
				"last_status_code": nullable("integer"), "last_error": nullable("string"), "delivered_at": nullTime(),
			})),
			"RejectedEvent": all(object(nil, obj{
				"id": str(), "tenant_id": nullable("string"), "subject": str(), "event_type": nullable("string"),
				"event_id": nullable("string"), "reason": str(), "detail": str(), "size_bytes": integer(), "received_at": timeOf(),
			})),
			"RejectedEventList": listOf("RejectedEvent"),
			"DeadLetter":        all(object(nil, deadLetterFields())),
			"DeadLetterDetail": func() obj {
				f := deadLetterFields()
				f["data"] = anyJSON("the event's payload")
				f["attempt_history"] = arrayOf(schemaRef("Attempt"))
				return all(object(nil, f))
			}(),
			"DeadLetterList": listOf("DeadLetter"),
			"ReplayRef":      all(object(nil, obj{"replay_id": str()})),
			"ReplayInput": object(nil, obj{
				"filter": object(nil, obj{
					"endpoint_id": str(), "event_type": str(), "reason": str(), "since": timeOf(), "until": timeOf(),
					"ids": arrayOf(str()), "include_resolved": obj{"type": "boolean", "default": false},
				}),
				"rate_per_second": obj{"type": "integer", "minimum": 1, "default": 50},
				"dry_run":         obj{"type": "boolean", "default": false},
			}),
			"Replay": all(object(nil, obj{
				"id": strDesc("rpl_…"), "state": enum("running", "done", "cancelled", "failed"),
				"matched": integer(), "replayed": integer(), "succeeded": integer(), "failed": integer(),
				"filter": obj{"type": "object"}, "rate_per_second": integer(),
				"created_by": str(), "created_at": timeOf(), "finished_at": nullTime(),
			})),
			"ReplayList":              listOf("Replay"),
			"DryRun":                  all(object(nil, obj{"matched": integer()})),
			"Verifier":                sourceVerifier(),
			"MappingRule":             mappingRule(),
			"Mapping":                 object(nil, obj{"event_type": schemaRef("MappingRule"), "ordering_key": nullRef("MappingRule"), "event_id": nullRef("MappingRule")}),
			"SourceInput":             sourceInput(),
			"Source":                  sourceSchema(),
			"SourceList":              listOf("Source"),
			"SourceSecretRotateInput": object([]string{"secret"}, obj{"secret": strDesc("the provider's new secret"), "grace_seconds": obj{"type": "integer", "minimum": 0, "maximum": 2592000, "default": 86400}}),
			"SourceSecretRotated":     all(object(nil, obj{"previous_secret_expires_at": timeOf()})),
			"SourceReject": all(object(nil, obj{
				"id": str(), "reason": enum("missing_signature", "invalid_signature", "stale_timestamp", "missing_credentials", "invalid_credentials",
					"too_large", "invalid_body", "mapping_failed", "invalid_event", "filtered", "duplicate"),
				"detail": str(), "event_type": nullable("string"), "event_id": nullable("string"), "size_bytes": integer(),
				"payload": obj{"type": []any{"string", "null"}, "description": "first 4 KiB of the body"}, "received_at": timeOf(),
			})),
			"SourceRejectList": listOf("SourceReject"),
			"InboundAccepted": all(object(nil, obj{
				"id": nullable("string"), "type": nullable("string"), "accepted_at": nullTime(),
				"duplicate": obj{"type": "boolean", "description": "the provider's delivery id was seen before; nothing new was created"},
				"filtered":  obj{"type": "boolean", "description": "the source's filter dropped the request (200); id, type and accepted_at are null"},
			})),
		},
	}
}

func deadLetterFields() obj {
	return obj{
		"id": strDesc("dl_…"), "event_id": str(), "endpoint_id": str(), "event_type": str(),
		"ordering_key": nullable("string"),
		"reason":       enum("exhausted", "non_retryable_status", "endpoint_disabled", "endpoint_deleted", "destination_blocked", "expired"),
		"attempts":     integer(), "last_status_code": nullable("integer"), "last_error": nullable("string"),
		"dead_at": timeOf(), "replays": integer(), "resolved_at": nullTime(),
	}
}

func nullRef(name string) obj { return obj{"oneOf": []any{schemaRef(name), obj{"type": "null"}}} }

func verifierProps() obj {
	return obj{
		"kind":              enum("standard_webhooks", "github", "stripe", "hmac", "basic_auth", "bearer", "none"),
		"username":          strDesc("basic_auth: the user name"),
		"header":            strDesc("hmac: the header carrying the signature"),
		"algorithm":         obj{"type": "string", "enum": []any{"sha256", "sha512"}, "description": "hmac; default sha256"},
		"encoding":          obj{"type": "string", "enum": []any{"hex", "base64"}, "description": "hmac; default hex"},
		"prefix":            strDesc("hmac: text before the encoded signature, e.g. sha256="),
		"signed_content":    strDesc("hmac: template over {body} and {timestamp}; default {body}"),
		"timestamp_header":  strDesc("hmac: header holding the Unix-seconds timestamp of {timestamp}"),
		"tolerance_seconds": obj{"type": "integer", "minimum": 1, "maximum": 86400, "description": "replay window of stripe and timestamped hmac; default 300"},
	}
}

func sourceVerifier() obj {
	o := object([]string{"kind"}, verifierProps())
	o["description"] = "How requests are authenticated. Only the options of the kind are shown."
	return o
}

func mappingRule() obj {
	return obj{
		"type":                 "object",
		"description":          "exactly one of header (its first value), value (a constant) or expression (CEL over body and headers, lower-case names)",
		"properties":           obj{"header": str(), "value": str(), "expression": str()},
		"additionalProperties": false,
	}
}

func sourceInput() obj {
	v := verifierProps()
	v["secret"] = strDesc("write-only; for basic_auth the password, for bearer the token, for standard_webhooks a whsec_ secret")
	return object(nil, obj{
		"name":     obj{"type": "string", "maxLength": 200},
		"verifier": object([]string{"kind"}, v),
		"mapping": object(nil, obj{
			"event_type":   schemaRef("MappingRule"),
			"ordering_key": nullRef("MappingRule"),
			"event_id":     nullRef("MappingRule"),
		}),
		"filter": obj{"type": []any{"string", "null"}, "description": "CEL over body and headers; false drops the request (recorded as filtered)"},
		"format": obj{"type": "string", "enum": []any{"json", "form"}, "default": "json"},
	})
}

func sourceSchema() obj {
	return all(object(nil, obj{
		"id": strDesc("src_…"), "tenant_id": str(), "name": str(),
		"ingest_url": obj{"type": []any{"string", "null"}, "description": "POST /v1/in/{token}; shown only by create and token/rotate"},
		"verifier":   schemaRef("Verifier"), "secret_set": boolean(),
		"previous_secret_expires_at": nullTime(),
		"mapping":                    schemaRef("Mapping"),
		"filter":                     nullable("string"),
		"format":                     enum("json", "form"),
		"created_at":                 timeOf(), "updated_at": timeOf(),
	}))
}
