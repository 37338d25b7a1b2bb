package deploy

import (
	"errors"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// copyTree copies the directory src to dst.
func copyTree(t *testing.T, src, dst string) {
	t.Helper()
	err := filepath.WalkDir(src, func(path string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		rel, err := filepath.Rel(src, path)
		if err != nil {
			return err
		}
		target := filepath.Join(dst, rel)
		if d.IsDir() {
			return os.MkdirAll(target, 0o755)
		}
		data, err := os.ReadFile(path)
		if err != nil {
			return err
		}
		return os.WriteFile(target, data, 0o644)
	})
	if err != nil {
		t.Fatal(err)
	}
}

// mutate replaces old by new in file, which must contain old.
func mutate(t *testing.T, file, old, new string) {
	t.Helper()
	data, err := os.ReadFile(file)
	if err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(string(data), old) {
		t.Fatalf("%s does not contain %q: the mutation is stale", file, old)
	}
	if err := os.WriteFile(file, []byte(strings.Replace(string(data), old, new, 1)), 0o644); err != nil {
		t.Fatal(err)
	}
}

// TestBrokenManifestsFail breaks a copy of deploy/k8s in one way at a time
// and checks that rendering and validation catch it.
func TestBrokenManifestsFail(t *testing.T) {
	t.Parallel()
	facts := loadFacts(t)
	cases := []struct {
		name, overlay, file, old, new, want string
	}{
		{"unknown field", "production", "base/ingest.yaml",
			"terminationGracePeriodSeconds: 60", "terminationGracePeriodSeconds: 60\n      terminationGraceSeconds: 60", "unknown field"},
		{"field in wrong case", "dev", "base/fanout.yaml",
			"revisionHistoryLimit: 5", "RevisionHistoryLimit: 5", "unknown field"},
		{"unknown field in a custom resource", "production", "components/keda/scaledobjects.yaml",
			"cooldownPeriod: 300", "cooldownPeriod: 300\n  idleReplicas: 0", "unknown field"},
		{"probe on the wrong port", "dev", "base/fanout.yaml",
			"path: /readyz\n              port: ops", "path: /readyz\n              port: 8080", "readiness probe port"},
		{"ops address moved without the ports", "production", "base/kustomization.yaml",
			"HOOKLINE_OPS_ADDR=:9090", "HOOKLINE_OPS_ADDR=:9191", "ops server listens on 9191"},
		{"wrong probe path", "dev", "base/dispatcher.yaml",
			"path: /healthz", "path: /health", "liveness probe path"},
		{"http port the service does not listen on", "dev", "base/deadletter.yaml",
			"value: \":8080\"", "value: \":8081\"", "the service listens on 8081"},
		{"env var the service does not read", "dev", "base/kustomization.yaml",
			"HOOKLINE_LOG_LEVEL=info", "HOOKLINE_LOG_LEVEL=info\n      - HOOKLINE_WORKERS=8", "HOOKLINE_WORKERS, which"},
		{"env var of another service", "dev", "base/fanout.yaml",
			"- name: OTEL_SERVICE_NAME", "- name: HOOKLINE_DEV_DIR\n              value: x\n            - name: OTEL_SERVICE_NAME", "HOOKLINE_DEV_DIR, which hookline-fanout does not read"},
		{"required env var missing", "dev", "base/deadletter.yaml",
			"- name: HOOKLINE_ADMIN_TOKEN\n", "- name: HOOKLINE_LOG_LEVEL\n", "does not set HOOKLINE_ADMIN_TOKEN"},
		{"binary no image builds", "production", "base/dispatcher.yaml",
			`command: ["/usr/local/bin/hookline-dispatcher"]`, `command: ["/usr/local/bin/hookline-dispatch"]`, "not a binary the Dockerfiles build"},
		{"binary from another image", "production", "base/fanout.yaml",
			"image: ghcr.io/hookline/hookline-fanout\n", "image: ghcr.io/hookline/hookline-dispatcher\n", "does not hold hookline-fanout"},
		{"undocumented secret key", "dev", "base/deadletter.yaml",
			"key: admin-token", "key: admin_token", `key "admin_token"`},
		{"grace period shorter than the drain", "production", "base/dispatcher.yaml",
			"terminationGracePeriodSeconds: 60", "terminationGracePeriodSeconds: 30", "terminationGracePeriodSeconds must exceed"},
		{"writable root filesystem", "dev", "base/migrate-job.yaml",
			"readOnlyRootFilesystem: true", "readOnlyRootFilesystem: false", "readOnlyRootFilesystem must be true"},
		{"capabilities kept", "dev", "base/ingest.yaml",
			"drop: [\"ALL\"]\n          volumeMounts", "drop: [\"NET_RAW\"]\n          volumeMounts", "capabilities must drop ALL"},
		{"token mounted", "dev", "base/serviceaccounts.yaml",
			"name: hookline-fanout\nautomountServiceAccountToken: false", "name: hookline-fanout\nautomountServiceAccountToken: true", "ServiceAccount \"hookline-fanout\""},
		{"no memory limit", "dev", "base/fanout.yaml",
			"limits:\n              cpu: 1\n              memory: 512Mi", "limits:\n              cpu: 1", "no memory limit"},
		{"replays routed to ingest", "production", "base/ingress.yaml",
			"(dead-letters|replays)", "dead-letters", "routes /v1/tenants/acme/replays"},
		{"prefix path cannot match the tenant", "production", "base/ingress.yaml",
			"pathType: ImplementationSpecific", "pathType: Prefix", "not a valid Prefix path"},
		{"network policy selecting nothing", "production", "base/networkpolicies.yaml",
			"app.kubernetes.io/component: dispatcher", "app.kubernetes.io/component: dispatchr", "selects no Deployment"},
		{"dispatcher reaching private ranges", "production", "base/networkpolicies.yaml",
			"              - 10.0.0.0/8\n", "", "private range 10.0.0.0/8"},
		{"service selecting nothing", "dev", "base/deadletter.yaml",
			"  selector:\n    app.kubernetes.io/name: hookline\n    app.kubernetes.io/component: deadletter", "  selector:\n    app.kubernetes.io/name: hookline\n    app.kubernetes.io/component: dead-letter", "matches 0 Deployments"},
		{"dev with two replicas", "dev", "overlays/dev/kustomization.yaml",
			"name: hookline-fanout\n    count: 1", "name: hookline-fanout\n    count: 2", "must run one replica"},
		{"scaling on the wrong consumer", "production", "components/keda/scaledobjects.yaml",
			"consumer: dispatcher", "consumer: attempt-log-x", "no nats-jetstream trigger"},
		{"scale to zero", "production", "components/keda/scaledobjects.yaml",
			"minReplicaCount: 2", "minReplicaCount: 0", "minReplicaCount must be at least 1"},
		{"replicas fighting the autoscaler", "production-hpa", "components/production/kustomization.yaml",
			"name: hookline-deadletter", "name: hookline-dispatcher", "sets replicas although"},
		{"servicemonitor on a missing port", "production", "components/monitoring/servicemonitor.yaml",
			"port: ops", "port: metrics", `has no port "metrics"`},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			dir := t.TempDir()
			copyTree(t, "k8s", dir)
			mutate(t, filepath.Join(dir, tc.file), tc.old, tc.new)
			r, err := render(filepath.Join(dir, "overlays", tc.overlay))
			var errs []error
			if err != nil {
				errs = []error{err}
			} else {
				errs = validate(r, facts, tc.overlay)
			}
			if len(errs) == 0 {
				t.Fatalf("the broken manifest passed validation")
			}
			if !strings.Contains(errors.Join(errs...).Error(), tc.want) {
				t.Errorf("want an error containing %q, got:\n%v", tc.want, errors.Join(errs...))
			}
		})
	}
}

// TestBrokenDockerfilesFail does the same for the Dockerfiles.
func TestBrokenDockerfilesFail(t *testing.T) {
	t.Parallel()
	makeBuild, err := makefileBuilds()
	if err != nil {
		t.Fatal(err)
	}
	uses, err := goWorkUses()
	if err != nil {
		t.Fatal(err)
	}
	cases := []struct{ name, old, new, want string }{
		{"output name differs", "-o /out/hookline-ingest ", "-o /out/ingest ", "make build builds it"},
		{"missing package", "./services/ingest/cmd/hookline-ingest", "./services/ingest/cmd/ingest", "no Go files"},
		{"not a main package", "./services/ingest/cmd/hookline-ingest", "./pkg/config", "not main"},
		{"root user", "USER 65532:65532", "USER root", "non-root USER"},
		{"cgo on", "ENV CGO_ENABLED=0 ", "ENV ", "CGO_ENABLED=0"},
		{"workspace module not copied", "COPY e2e/go.* e2e/\n", "", "go.work uses ./e2e"},
		{"copy of a missing path", "COPY pkg/ pkg/", "COPY pkgs/ pkg/", "COPY source pkgs/"},
		{"entrypoint elsewhere", `ENTRYPOINT ["/usr/local/bin/hookline-ingest"]`, `ENTRYPOINT ["/hookline-ingest"]`, "ENTRYPOINT"},
		{"fat runtime image", "FROM gcr.io/distroless/static-debian12:nonroot", "FROM debian:12", "distroless static or scratch"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			file := filepath.Join(t.TempDir(), "ingest.Dockerfile")
			data, err := os.ReadFile(filepath.Join("docker", "ingest.Dockerfile"))
			if err != nil {
				t.Fatal(err)
			}
			if err := os.WriteFile(file, data, 0o644); err != nil {
				t.Fatal(err)
			}
			mutate(t, file, tc.old, tc.new)
			_, err = parseDockerfile(file, makeBuild, uses)
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Errorf("want an error containing %q, got %v", tc.want, err)
			}
		})
	}
}
