package deploy

import (
	"os"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"testing"
)

// natsValues is the part of the NATS chart's values that deploy/nats uses.
type natsValues struct {
	Config struct {
		Cluster struct {
			Enabled  bool `json:"enabled"`
			Replicas int  `json:"replicas"`
		} `json:"cluster"`
		JetStream struct {
			Enabled   bool `json:"enabled"`
			FileStore struct {
				Enabled bool   `json:"enabled"`
				Dir     string `json:"dir"`
				PVC     struct {
					Enabled bool   `json:"enabled"`
					Size    string `json:"size"`
				} `json:"pvc"`
			} `json:"fileStore"`
		} `json:"jetstream"`
		Monitor struct {
			Enabled bool `json:"enabled"`
			Port    int  `json:"port"`
		} `json:"monitor"`
	} `json:"config"`
	Container struct {
		Image struct {
			Repository string `json:"repository"`
			Tag        string `json:"tag"`
		} `json:"image"`
		Merge map[string]any `json:"merge"`
	} `json:"container"`
	PromExporter struct {
		Enabled    bool `json:"enabled"`
		PodMonitor struct {
			Enabled bool `json:"enabled"`
		} `json:"podMonitor"`
	} `json:"promExporter"`
	PodTemplate         map[string]any `json:"podTemplate"`
	PodDisruptionBudget struct {
		Enabled bool `json:"enabled"`
	} `json:"podDisruptionBudget"`
}

var chartVersionRe = regexp.MustCompile(`helm upgrade --install nats nats/nats --version (\d+\.\d+\.\d+)`)

func TestNATSValues(t *testing.T) {
	t.Parallel()
	data, err := os.ReadFile(filepath.Join("nats", "values.yaml"))
	if err != nil {
		t.Fatal(err)
	}
	var v natsValues
	if err := strictYAML(data, &v); err != nil {
		t.Fatalf("nats/values.yaml: %v", err)
	}
	if !v.Config.Cluster.Enabled || v.Config.Cluster.Replicas != 3 {
		t.Errorf("want a 3-node cluster, got enabled=%v replicas=%d", v.Config.Cluster.Enabled, v.Config.Cluster.Replicas)
	}
	js := v.Config.JetStream
	if !js.Enabled || !js.FileStore.Enabled || !js.FileStore.PVC.Enabled || js.FileStore.PVC.Size == "" {
		t.Errorf("want JetStream on file storage with PVCs: %+v", js)
	}
	if !v.Config.Monitor.Enabled || v.Config.Monitor.Port != 8222 {
		t.Errorf("KEDA reads the monitoring port 8222: %+v", v.Config.Monitor)
	}
	// A pinned nats-server of 2.11 or newer (pkg/bus.MinServerVersion).
	m := regexp.MustCompile(`^(\d+)\.(\d+)\.(\d+)`).FindStringSubmatch(v.Container.Image.Tag)
	if m == nil {
		t.Fatalf("image tag %q is not a pinned version", v.Container.Image.Tag)
	}
	major, _ := strconv.Atoi(m[1])
	minor, _ := strconv.Atoi(m[2])
	if major < 2 || (major == 2 && minor < 11) {
		t.Errorf("nats-server %s is older than 2.11", v.Container.Image.Tag)
	}
	// The chart version is pinned, and the README installs the same one.
	cv := chartVersionRe.FindSubmatch(data)
	if cv == nil {
		t.Fatal("values.yaml does not show the pinned helm install command")
	}
	readme, err := os.ReadFile("README.md")
	if err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(string(readme), string(cv[0])) {
		t.Errorf("README.md does not install the chart version pinned in values.yaml (%s)", cv[1])
	}
}

func TestCloudNativePGExample(t *testing.T) {
	t.Parallel()
	data, err := os.ReadFile(filepath.Join("postgres", "cnpg-cluster.yaml"))
	if err != nil {
		t.Fatal(err)
	}
	var c cnpgCluster
	if err := strictYAML(data, &c); err != nil {
		t.Fatalf("postgres/cnpg-cluster.yaml: %v", err)
	}
	if c.APIVersion != "postgresql.cnpg.io/v1" || c.Kind != "Cluster" {
		t.Errorf("got %s %s", c.APIVersion, c.Kind)
	}
	if c.Spec.Instances < 3 || c.Spec.Bootstrap.InitDB.Database != "hookline" {
		t.Errorf("want 3 instances and database hookline: %+v", c.Spec)
	}
	// The NetworkPolicies let Hookline reach pods of this cluster.
	np, err := os.ReadFile(filepath.Join("k8s", "base", "networkpolicies.yaml"))
	if err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(string(np), "cnpg.io/cluster: "+c.Name) {
		t.Errorf("networkpolicies.yaml does not allow PostgreSQL pods of cluster %s", c.Name)
	}
}
