package deploy

import (
	"encoding/json"
	"fmt"
	"path/filepath"
	"testing"

	appsv1 "k8s.io/api/apps/v1"
	autoscalingv2 "k8s.io/api/autoscaling/v2"
	batchv1 "k8s.io/api/batch/v1"
	corev1 "k8s.io/api/core/v1"
	networkingv1 "k8s.io/api/networking/v1"
	policyv1 "k8s.io/api/policy/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	kjson "sigs.k8s.io/json"
	"sigs.k8s.io/kustomize/api/krusty"
	"sigs.k8s.io/kustomize/kyaml/filesys"
	"sigs.k8s.io/yaml"
)

// Local, deliberately small types for the custom resources the manifests
// use. Decoding is strict, so a field not declared here fails the test: add
// it here only after checking the CRD's schema.

type scaledObject struct {
	metav1.TypeMeta   `json:",inline"`
	metav1.ObjectMeta `json:"metadata"`
	Spec              struct {
		ScaleTargetRef struct {
			Name string `json:"name"`
		} `json:"scaleTargetRef"`
		PollingInterval int `json:"pollingInterval"`
		CooldownPeriod  int `json:"cooldownPeriod"`
		MinReplicaCount int `json:"minReplicaCount"`
		MaxReplicaCount int `json:"maxReplicaCount"`
		Advanced        *struct {
			HorizontalPodAutoscalerConfig struct {
				Behavior *autoscalingv2.HorizontalPodAutoscalerBehavior `json:"behavior"`
			} `json:"horizontalPodAutoscalerConfig"`
		} `json:"advanced,omitempty"`
		Triggers []struct {
			Type     string            `json:"type"`
			Metadata map[string]string `json:"metadata"`
		} `json:"triggers"`
	} `json:"spec"`
}

type serviceMonitor struct {
	metav1.TypeMeta   `json:",inline"`
	metav1.ObjectMeta `json:"metadata"`
	Spec              struct {
		Selector  metav1.LabelSelector `json:"selector"`
		Endpoints []struct {
			Port          string `json:"port"`
			Path          string `json:"path"`
			Interval      string `json:"interval"`
			ScrapeTimeout string `json:"scrapeTimeout"`
		} `json:"endpoints"`
	} `json:"spec"`
}

type prometheusRule struct {
	metav1.TypeMeta   `json:",inline"`
	metav1.ObjectMeta `json:"metadata"`
	Spec              struct {
		Groups []struct {
			Name  string `json:"name"`
			Rules []struct {
				Alert       string            `json:"alert"`
				Expr        string            `json:"expr"`
				For         string            `json:"for,omitempty"`
				Labels      map[string]string `json:"labels"`
				Annotations map[string]string `json:"annotations"`
			} `json:"rules"`
		} `json:"groups"`
	} `json:"spec"`
}

// cnpgCluster is the part of a CloudNativePG Cluster the example uses.
type cnpgCluster struct {
	metav1.TypeMeta   `json:",inline"`
	metav1.ObjectMeta `json:"metadata"`
	Spec              struct {
		Instances             int    `json:"instances"`
		ImageName             string `json:"imageName"`
		PrimaryUpdateStrategy string `json:"primaryUpdateStrategy"`
		PostgreSQL            struct {
			Parameters  map[string]string `json:"parameters"`
			Synchronous struct {
				Method string `json:"method"`
				Number int    `json:"number"`
			} `json:"synchronous"`
		} `json:"postgresql"`
		Bootstrap struct {
			InitDB struct {
				Database string `json:"database"`
				Owner    string `json:"owner"`
			} `json:"initdb"`
		} `json:"bootstrap"`
		Storage struct {
			Size string `json:"size"`
		} `json:"storage"`
		Resources  corev1.ResourceRequirements `json:"resources"`
		Monitoring struct {
			EnablePodMonitor bool `json:"enablePodMonitor"`
		} `json:"monitoring"`
	} `json:"spec"`
}

// rendered is one kustomization's output, decoded.
type rendered struct {
	Namespaces      []corev1.Namespace
	ServiceAccounts []corev1.ServiceAccount
	ConfigMaps      []corev1.ConfigMap
	Secrets         []corev1.Secret
	Services        []corev1.Service
	Deployments     []appsv1.Deployment
	Jobs            []batchv1.Job
	Ingresses       []networkingv1.Ingress
	NetworkPolicies []networkingv1.NetworkPolicy
	PDBs            []policyv1.PodDisruptionBudget
	HPAs            []autoscalingv2.HorizontalPodAutoscaler
	ScaledObjects   []scaledObject
	ServiceMonitors []serviceMonitor
	PrometheusRules []prometheusRule
}

// strictUnmarshal decodes JSON as the API server does in strict mode: case
// sensitive, no unknown or duplicate fields.
func strictUnmarshal(data []byte, v any) error {
	strictErrs, err := kjson.UnmarshalStrict(data, v)
	if err != nil {
		return err
	}
	if len(strictErrs) > 0 {
		return fmt.Errorf("strict decoding: %v", strictErrs)
	}
	return nil
}

// strictYAML decodes one YAML document strictly.
func strictYAML(data []byte, v any) error {
	j, err := yaml.YAMLToJSON(data)
	if err != nil {
		return fmt.Errorf("yaml to json: %w", err)
	}
	return strictUnmarshal(j, v)
}

func appendDecoded[T any](list *[]T, data []byte) error {
	var v T
	if err := strictUnmarshal(data, &v); err != nil {
		return err
	}
	*list = append(*list, v)
	return nil
}

// render builds the kustomization in dir with the kustomize Go API and
// strictly decodes every object into its Kubernetes API type.
func render(dir string) (*rendered, error) {
	k := krusty.MakeKustomizer(krusty.MakeDefaultOptions())
	abs, err := filepath.Abs(dir)
	if err != nil {
		return nil, fmt.Errorf("resolve %s: %w", dir, err)
	}
	m, err := k.Run(filesys.MakeFsOnDisk(), abs)
	if err != nil {
		return nil, fmt.Errorf("kustomize build %s: %w", dir, err)
	}
	out := &rendered{}
	for _, r := range m.Resources() {
		data, err := r.MarshalJSON()
		if err != nil {
			return nil, fmt.Errorf("marshal %s: %w", r.CurId(), err)
		}
		var tm metav1.TypeMeta
		if err := json.Unmarshal(data, &tm); err != nil {
			return nil, fmt.Errorf("read kind of %s: %w", r.CurId(), err)
		}
		switch tm.APIVersion + " " + tm.Kind {
		case "v1 Namespace":
			err = appendDecoded(&out.Namespaces, data)
		case "v1 ServiceAccount":
			err = appendDecoded(&out.ServiceAccounts, data)
		case "v1 ConfigMap":
			err = appendDecoded(&out.ConfigMaps, data)
		case "v1 Secret":
			err = appendDecoded(&out.Secrets, data)
		case "v1 Service":
			err = appendDecoded(&out.Services, data)
		case "apps/v1 Deployment":
			err = appendDecoded(&out.Deployments, data)
		case "batch/v1 Job":
			err = appendDecoded(&out.Jobs, data)
		case "networking.k8s.io/v1 Ingress":
			err = appendDecoded(&out.Ingresses, data)
		case "networking.k8s.io/v1 NetworkPolicy":
			err = appendDecoded(&out.NetworkPolicies, data)
		case "policy/v1 PodDisruptionBudget":
			err = appendDecoded(&out.PDBs, data)
		case "autoscaling/v2 HorizontalPodAutoscaler":
			err = appendDecoded(&out.HPAs, data)
		case "keda.sh/v1alpha1 ScaledObject":
			err = appendDecoded(&out.ScaledObjects, data)
		case "monitoring.coreos.com/v1 ServiceMonitor":
			err = appendDecoded(&out.ServiceMonitors, data)
		case "monitoring.coreos.com/v1 PrometheusRule":
			err = appendDecoded(&out.PrometheusRules, data)
		default:
			err = fmt.Errorf("no API type known to this test (add one to render)")
		}
		if err != nil {
			return nil, fmt.Errorf("%s %s/%s: %w", tm.Kind, r.GetNamespace(), r.GetName(), err)
		}
	}
	return out, nil
}

// overlays are the kustomizations an operator applies.
var overlays = []string{"dev", "production", "production-hpa"}

func TestRenderEveryOverlay(t *testing.T) {
	t.Parallel()
	facts := loadFacts(t)
	for _, o := range overlays {
		t.Run(o, func(t *testing.T) {
			t.Parallel()
			r, err := render(filepath.Join("k8s", "overlays", o))
			if err != nil {
				t.Fatal(err)
			}
			for _, err := range validate(r, facts, o) {
				t.Error(err)
			}
		})
	}
}
