package deploy

import (
	"fmt"
	"net"
	"net/netip"
	"path"
	"regexp"
	"slices"
	"sort"
	"strings"
	"time"

	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	networkingv1 "k8s.io/api/networking/v1"
	policyv1 "k8s.io/api/policy/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/labels"
	"k8s.io/apimachinery/pkg/util/intstr"
)

// Defaults of pkg/config, which the manifests rely on when they do not set
// the variable.
const (
	defaultOpsPort         = 9090
	defaultHTTPPort        = 8080
	defaultShutdownTimeout = 30 * time.Second
	// graceMargin is what a pod needs besides HOOKLINE_SHUTDOWN_TIMEOUT and
	// its preStop pause: flushing telemetry and stopping the ops server (up
	// to 5 s each in the services).
	graceMargin = 10 * time.Second
)

// httpBinaries serve the public API on HOOKLINE_HTTP_ADDR.
var httpBinaries = []string{"hookline-ingest", "hookline-deadletter"}

// requiredEnv are the variables without which a binary does not start.
var requiredEnv = map[string][]string{
	"hookline-ingest":     {"HOOKLINE_NATS_URL", "HOOKLINE_DATABASE_URL", "HOOKLINE_ADMIN_TOKEN"},
	"hookline-deadletter": {"HOOKLINE_NATS_URL", "HOOKLINE_DATABASE_URL", "HOOKLINE_ADMIN_TOKEN"},
	"hookline-fanout":     {"HOOKLINE_NATS_URL", "HOOKLINE_DATABASE_URL"},
	"hookline-dispatcher": {"HOOKLINE_NATS_URL", "HOOKLINE_DATABASE_URL"},
}

// backlogScaling is what KEDA must watch for each autoscaled service:
// stream and consumer from pkg/bus.
var backlogScaling = map[string][2]string{
	"hookline-dispatcher": {"HOOKLINE_DELIVERIES", "dispatcher"},
	"hookline-fanout":     {"HOOKLINE_EVENTS", "fanout"},
}

// checker gathers problems of one rendering.
type checker struct {
	r    *rendered
	f    facts
	errs []error
}

func (c *checker) errorf(format string, a ...any) { c.errs = append(c.errs, fmt.Errorf(format, a...)) }

// validate checks the invariants every overlay must hold.
func validate(r *rendered, f facts, overlay string) []error {
	c := &checker{r: r, f: f}
	if len(r.Deployments) != len(requiredEnv) {
		c.errorf("want %d Deployments, got %d", len(requiredEnv), len(r.Deployments))
	}
	for _, s := range r.Secrets {
		c.errorf("Secret %s is rendered: secrets are created by the operator, not kept in the kustomization", s.Name)
	}
	for _, d := range r.Deployments {
		c.deployment(d)
	}
	for _, j := range r.Jobs {
		c.pod("Job "+j.Name, j.Spec.Template.Spec)
		ct := j.Spec.Template.Spec.Containers
		if len(ct) != 1 || !slices.Equal(ct[0].Command, []string{f.Binaries["hookline-ingest"].Path, "migrate"}) {
			c.errorf("Job %s: want the single command hookline-ingest migrate", j.Name)
		}
	}
	c.services()
	c.networkPolicies()
	c.ingresses()
	c.autoscaling(overlay)
	c.monitoring()
	return c.errs
}

// podTemplates are the pods the rendering creates, by owner.
func (c *checker) podTemplates() map[string]corev1.PodTemplateSpec {
	out := map[string]corev1.PodTemplateSpec{}
	for _, d := range c.r.Deployments {
		out["Deployment "+d.Name] = d.Spec.Template
	}
	for _, j := range c.r.Jobs {
		out["Job "+j.Name] = j.Spec.Template
	}
	return out
}

func (c *checker) deployment(d appsv1.Deployment) {
	where := "Deployment " + d.Name
	spec := d.Spec.Template.Spec
	c.pod(where, spec)
	if len(spec.Containers) != 1 {
		c.errorf("%s: want one container, got %d", where, len(spec.Containers))
		return
	}
	ct := spec.Containers[0]
	bin := c.binaryOf(where, ct)
	if bin == "" {
		return
	}
	if !labels.SelectorFromSet(d.Spec.Selector.MatchLabels).Matches(labels.Set(d.Spec.Template.Labels)) {
		c.errorf("%s: selector does not match its pod labels", where)
	}
	env := c.effectiveEnv(ct)
	for _, name := range requiredEnv[bin] {
		if _, ok := env[name]; !ok {
			c.errorf("%s: %s does not set %s, which %s requires", where, ct.Name, name, bin)
		}
	}
	// Probes on the ops port.
	opsPort := portOf(env["HOOKLINE_OPS_ADDR"], defaultOpsPort)
	c.probe(where, "readiness", ct, ct.ReadinessProbe, "/readyz", opsPort)
	c.probe(where, "liveness", ct, ct.LivenessProbe, "/healthz", opsPort)
	httpPort, hasHTTP := containerPort(ct, intstr.FromString("http"))
	if slices.Contains(httpBinaries, bin) {
		if want := portOf(env["HOOKLINE_HTTP_ADDR"], defaultHTTPPort); !hasHTTP || httpPort != want {
			c.errorf("%s: port \"http\" is %d, the service listens on %d (HOOKLINE_HTTP_ADDR)", where, httpPort, want)
		}
	} else if hasHTTP {
		c.errorf("%s: %s serves no HTTP API but declares port \"http\"", where, bin)
	}
	// Grace period longer than the drain.
	shutdown := defaultShutdownTimeout
	if v, ok := env["HOOKLINE_SHUTDOWN_TIMEOUT"]; ok {
		var err error
		if shutdown, err = time.ParseDuration(v); err != nil {
			c.errorf("%s: HOOKLINE_SHUTDOWN_TIMEOUT %q: %v", where, v, err)
		}
	}
	need := shutdown + graceMargin
	if ct.Lifecycle != nil && ct.Lifecycle.PreStop != nil && ct.Lifecycle.PreStop.Sleep != nil {
		need += time.Duration(ct.Lifecycle.PreStop.Sleep.Seconds) * time.Second
	}
	if spec.TerminationGracePeriodSeconds == nil || time.Duration(*spec.TerminationGracePeriodSeconds)*time.Second <= need {
		c.errorf("%s: terminationGracePeriodSeconds must exceed %s (shutdown timeout, preStop and margin)", where, need)
	}
}

// pod checks what every pod must have, Deployments' and Jobs' alike.
func (c *checker) pod(where string, spec corev1.PodSpec) {
	if spec.AutomountServiceAccountToken == nil || *spec.AutomountServiceAccountToken {
		c.errorf("%s: automountServiceAccountToken must be false", where)
	}
	if !slices.ContainsFunc(c.r.ServiceAccounts, func(sa corev1.ServiceAccount) bool {
		return sa.Name == spec.ServiceAccountName && sa.AutomountServiceAccountToken != nil && !*sa.AutomountServiceAccountToken
	}) {
		c.errorf("%s: ServiceAccount %q missing or mounting its token", where, spec.ServiceAccountName)
	}
	psc := spec.SecurityContext
	if psc == nil || psc.RunAsNonRoot == nil || !*psc.RunAsNonRoot {
		c.errorf("%s: pod securityContext.runAsNonRoot must be true", where)
	}
	if psc == nil || psc.SeccompProfile == nil || psc.SeccompProfile.Type != corev1.SeccompProfileTypeRuntimeDefault {
		c.errorf("%s: pod seccompProfile must be RuntimeDefault", where)
	}
	for _, ct := range append(slices.Clone(spec.InitContainers), spec.Containers...) {
		cw := where + " container " + ct.Name
		c.binaryOf(cw, ct)
		for _, r := range []corev1.ResourceName{corev1.ResourceCPU, corev1.ResourceMemory} {
			if _, ok := ct.Resources.Requests[r]; !ok {
				c.errorf("%s: no %s request", cw, r)
			}
			if _, ok := ct.Resources.Limits[r]; !ok {
				c.errorf("%s: no %s limit", cw, r)
			}
		}
		sc := ct.SecurityContext
		switch {
		case sc == nil:
			c.errorf("%s: no securityContext", cw)
		default:
			if sc.AllowPrivilegeEscalation == nil || *sc.AllowPrivilegeEscalation {
				c.errorf("%s: allowPrivilegeEscalation must be false", cw)
			}
			if sc.ReadOnlyRootFilesystem == nil || !*sc.ReadOnlyRootFilesystem {
				c.errorf("%s: readOnlyRootFilesystem must be true", cw)
			}
			if sc.RunAsNonRoot == nil || !*sc.RunAsNonRoot {
				c.errorf("%s: runAsNonRoot must be true", cw)
			}
			if sc.Privileged != nil && *sc.Privileged {
				c.errorf("%s: privileged", cw)
			}
			if sc.Capabilities == nil || !slices.Equal(sc.Capabilities.Drop, []corev1.Capability{"ALL"}) || len(sc.Capabilities.Add) > 0 {
				c.errorf("%s: capabilities must drop ALL and add none", cw)
			}
		}
		// Environment: only variables the binary reads; secrets from the
		// operator's Secret, keys it documents.
		bin := path.Base(firstOr(ct.Command, ""))
		for _, e := range ct.Env {
			if !c.f.envAllowed(bin, e.Name) {
				c.errorf("%s: sets %s, which %s does not read", cw, e.Name, bin)
			}
			if e.ValueFrom != nil && e.ValueFrom.SecretKeyRef != nil {
				ref := e.ValueFrom.SecretKeyRef
				if ref.Name != c.f.SecretName || !slices.Contains(c.f.SecretKeys, ref.Key) {
					c.errorf("%s: %s reads key %q of Secret %q, not documented in examples/secret.example.yaml (Secret %q, keys %v)", cw, e.Name, ref.Key, ref.Name, c.f.SecretName, c.f.SecretKeys)
				}
			}
			if e.ValueFrom != nil && e.ValueFrom.ConfigMapKeyRef != nil {
				cm := c.configMap(e.ValueFrom.ConfigMapKeyRef.Name)
				if _, ok := cm.Data[e.ValueFrom.ConfigMapKeyRef.Key]; !ok {
					c.errorf("%s: %s reads missing key %s of ConfigMap %s", cw, e.Name, e.ValueFrom.ConfigMapKeyRef.Key, e.ValueFrom.ConfigMapKeyRef.Name)
				}
			}
		}
		for _, ef := range ct.EnvFrom {
			if ef.SecretRef != nil {
				c.errorf("%s: envFrom a Secret hides which keys are used; use secretKeyRef", cw)
			}
			if ef.ConfigMapRef == nil {
				continue
			}
			cm := c.configMap(ef.ConfigMapRef.Name)
			if cm.Name == "" {
				c.errorf("%s: envFrom ConfigMap %s is not rendered", cw, ef.ConfigMapRef.Name)
			}
			for k := range cm.Data {
				if !c.f.envAllowed(bin, ef.Prefix+k) {
					c.errorf("%s: ConfigMap %s sets %s, which %s does not read", cw, cm.Name, ef.Prefix+k, bin)
				}
			}
		}
	}
}

// binaryOf checks the container runs a binary an image builds, from that
// image, and returns the binary's name.
func (c *checker) binaryOf(where string, ct corev1.Container) string {
	if len(ct.Command) == 0 {
		c.errorf("%s: no command (name the binary explicitly)", where)
		return ""
	}
	name := path.Base(ct.Command[0])
	b, ok := c.f.Binaries[name]
	if !ok || b.Path != ct.Command[0] {
		c.errorf("%s: command %s is not a binary the Dockerfiles build", where, ct.Command[0])
		return ""
	}
	image, _, _ := strings.Cut(ct.Image, ":")
	if path.Base(image) != name {
		c.errorf("%s: image %s does not hold %s", where, ct.Image, name)
	}
	if len(ct.Command) > 1 && !(name == "hookline-ingest" && slices.Equal(ct.Command[1:], []string{"migrate"})) {
		c.errorf("%s: unexpected arguments %v", where, ct.Command[1:])
	}
	return name
}

func (c *checker) configMap(name string) corev1.ConfigMap {
	for _, cm := range c.r.ConfigMaps {
		if cm.Name == name {
			return cm
		}
	}
	c.errorf("ConfigMap %s is referenced but not rendered", name)
	return corev1.ConfigMap{}
}

// effectiveEnv is the container's environment as the process sees it;
// values from Secrets are "<secret>".
func (c *checker) effectiveEnv(ct corev1.Container) map[string]string {
	env := map[string]string{}
	for _, ef := range ct.EnvFrom {
		if ef.ConfigMapRef != nil {
			for k, v := range c.configMap(ef.ConfigMapRef.Name).Data {
				env[ef.Prefix+k] = v
			}
		}
	}
	for _, e := range ct.Env {
		switch {
		case e.ValueFrom == nil:
			env[e.Name] = e.Value
		case e.ValueFrom.ConfigMapKeyRef != nil:
			env[e.Name] = c.configMap(e.ValueFrom.ConfigMapKeyRef.Name).Data[e.ValueFrom.ConfigMapKeyRef.Key]
		default:
			env[e.Name] = "<secret>"
		}
	}
	return env
}

func (c *checker) probe(where, kind string, ct corev1.Container, p *corev1.Probe, wantPath string, wantPort int32) {
	if p == nil || p.HTTPGet == nil {
		c.errorf("%s: no %s httpGet probe", where, kind)
		return
	}
	if p.HTTPGet.Path != wantPath {
		c.errorf("%s: %s probe path %s, want %s", where, kind, p.HTTPGet.Path, wantPath)
	}
	port, ok := containerPort(ct, p.HTTPGet.Port)
	if !ok || port != wantPort {
		c.errorf("%s: %s probe port %s is %d, the ops server listens on %d (HOOKLINE_OPS_ADDR)", where, kind, p.HTTPGet.Port.String(), port, wantPort)
	}
}

// containerPort resolves a port by name or number.
func containerPort(ct corev1.Container, p intstr.IntOrString) (int32, bool) {
	for _, cp := range ct.Ports {
		if (p.Type == intstr.String && cp.Name == p.StrVal) || (p.Type == intstr.Int && cp.ContainerPort == p.IntVal) {
			return cp.ContainerPort, true
		}
	}
	return 0, false
}

// portOf is the port of a listen address such as ":9090".
func portOf(addr string, def int32) int32 {
	if addr == "" {
		return def
	}
	_, p, err := net.SplitHostPort(addr)
	if err != nil {
		return -1
	}
	var n int32
	_, _ = fmt.Sscan(p, &n)
	return n
}

func firstOr(s []string, def string) string {
	if len(s) == 0 {
		return def
	}
	return s[0]
}

// selectedPods lists the pod templates sel selects.
func (c *checker) selectedPods(sel labels.Selector) []string {
	var out []string
	for owner, tpl := range c.podTemplates() {
		if sel.Matches(labels.Set(tpl.Labels)) {
			out = append(out, owner)
		}
	}
	sort.Strings(out)
	return out
}

func (c *checker) deploymentNamed(name string) *appsv1.Deployment {
	for i := range c.r.Deployments {
		if c.r.Deployments[i].Name == name {
			return &c.r.Deployments[i]
		}
	}
	return nil
}

func (c *checker) services() {
	for _, s := range c.r.Services {
		var owners []*appsv1.Deployment
		for i, d := range c.r.Deployments {
			if len(s.Spec.Selector) > 0 && labels.SelectorFromSet(s.Spec.Selector).Matches(labels.Set(d.Spec.Template.Labels)) {
				owners = append(owners, &c.r.Deployments[i])
			}
		}
		if len(owners) != 1 {
			c.errorf("Service %s: selector %v matches %d Deployments, want 1", s.Name, s.Spec.Selector, len(owners))
			continue
		}
		for _, p := range s.Spec.Ports {
			if _, ok := containerPort(owners[0].Spec.Template.Spec.Containers[0], p.TargetPort); !ok {
				c.errorf("Service %s: targetPort %s is not a port of Deployment %s", s.Name, p.TargetPort.String(), owners[0].Name)
			}
		}
	}
}

// privateRanges must stay out of reach of the dispatcher's internet egress.
var privateRanges = []string{"10.0.0.0/8", "172.16.0.0/12", "192.168.0.0/16", "169.254.0.0/16", "127.0.0.0/8", "fc00::/7", "fe80::/10"}

func (c *checker) networkPolicies() {
	for _, np := range c.r.NetworkPolicies {
		where := "NetworkPolicy " + np.Name
		sel, err := metav1.LabelSelectorAsSelector(&np.Spec.PodSelector)
		if err != nil {
			c.errorf("%s: %v", where, err)
			continue
		}
		pods := c.selectedPods(sel)
		if len(pods) == 0 {
			c.errorf("%s: selects no Deployment or Job", where)
			continue
		}
		// Named ports must exist on every selected pod.
		var ports []networkingv1.NetworkPolicyPort
		for _, in := range np.Spec.Ingress {
			ports = append(ports, in.Ports...)
		}
		for _, p := range ports {
			if p.Port == nil || p.Port.Type != intstr.String {
				continue
			}
			for _, owner := range pods {
				if _, ok := containerPort(c.podTemplates()[owner].Spec.Containers[0], *p.Port); !ok {
					c.errorf("%s: port %s does not exist on %s", where, p.Port.StrVal, owner)
				}
			}
		}
		for _, eg := range np.Spec.Egress {
			for _, peer := range eg.To {
				if peer.IPBlock == nil {
					continue
				}
				if !slices.Equal(pods, []string{"Deployment hookline-dispatcher"}) {
					c.errorf("%s: only the dispatcher may reach IP blocks, this selects %v", where, pods)
				}
				c.ipBlockExcludesPrivate(where, *peer.IPBlock)
			}
		}
	}
}

func (c *checker) ipBlockExcludesPrivate(where string, b networkingv1.IPBlock) {
	cidr, err := netip.ParsePrefix(b.CIDR)
	if err != nil {
		c.errorf("%s: cidr %s: %v", where, b.CIDR, err)
		return
	}
	for _, r := range privateRanges {
		priv := netip.MustParsePrefix(r)
		if priv.Addr().Is4() != cidr.Addr().Is4() || !cidr.Overlaps(priv) {
			continue
		}
		if !slices.ContainsFunc(b.Except, func(e string) bool {
			ex, err := netip.ParsePrefix(e)
			return err == nil && ex.Bits() <= priv.Bits() && ex.Contains(priv.Addr())
		}) {
			c.errorf("%s: ipBlock %s lets the pod reach private range %s", where, b.CIDR, r)
		}
	}
}

func (c *checker) ingresses() {
	if len(c.r.Ingresses) != 1 {
		c.errorf("want one Ingress, got %d", len(c.r.Ingresses))
		return
	}
	for _, rule := range c.r.Ingresses[0].Spec.Rules {
		for _, p := range rule.HTTP.Paths {
			svc := p.Backend.Service
			if svc == nil {
				c.errorf("Ingress path %s: no service backend", p.Path)
				continue
			}
			i := slices.IndexFunc(c.r.Services, func(s corev1.Service) bool { return s.Name == svc.Name })
			if i < 0 {
				c.errorf("Ingress path %s: Service %s not rendered", p.Path, svc.Name)
				continue
			}
			if !slices.ContainsFunc(c.r.Services[i].Spec.Ports, func(sp corev1.ServicePort) bool {
				return sp.Name == svc.Port.Name && (svc.Port.Number == 0 || sp.Port == svc.Port.Number)
			}) {
				c.errorf("Ingress path %s: Service %s has no port %q", p.Path, svc.Name, svc.Port.Name)
			}
		}
	}
	for _, tc := range routeCases {
		got, err := route(c.r.Ingresses[0], tc.path)
		if err != nil {
			c.errorf("Ingress: %v", err)
			return
		}
		if got != tc.service {
			c.errorf("Ingress routes %s to %q, want %q (CONTRACT 1)", tc.path, got, tc.service)
		}
	}
}

// routeCases: CONTRACT 1 sends /v1/tenants/{t}/dead-letters… and
// /v1/tenants/{t}/replays… to the dead-letter service, every other /v1 route
// to ingest. Tenant ids may themselves be "dead-letters" or "replays".
var routeCases = []struct{ path, service string }{
	{"/v1/tenants/acme/dead-letters", "hookline-deadletter"},
	{"/v1/tenants/acme/dead-letters/dl_1", "hookline-deadletter"},
	{"/v1/tenants/acme/dead-letters/dl_1/replay", "hookline-deadletter"},
	{"/v1/tenants/acme/replays", "hookline-deadletter"},
	{"/v1/tenants/acme/replays/rpl_1", "hookline-deadletter"},
	{"/v1/tenants/replays/dead-letters", "hookline-deadletter"},
	{"/v1/tenants", "hookline-ingest"},
	{"/v1/tenants/acme", "hookline-ingest"},
	{"/v1/tenants/dead-letters", "hookline-ingest"},
	{"/v1/tenants/replays/api-keys", "hookline-ingest"},
	{"/v1/tenants/acme/events", "hookline-ingest"},
	{"/v1/tenants/acme/events/batch", "hookline-ingest"},
	{"/v1/tenants/acme/endpoints/ep_1/attempts", "hookline-ingest"},
	{"/v1/tenants/acme/endpoints/replays", "hookline-ingest"},
	{"/v1/tenants/acme/dead-letters-archive", "hookline-ingest"},
	{"/v1/rejected-events", "hookline-ingest"},
	{"/v1", "hookline-ingest"},
	{"/v2/tenants", ""},
	{"/healthz", ""},
	{"/metrics", ""},
}

var plainPath = regexp.MustCompile(`^/[A-Za-z0-9/_.-]*$`)

// route picks the backend Service for a request path the way ingress-nginx
// does: with use-regex every path is a case-insensitive regular expression
// anchored at the start, tried longest first; without it, Exact and Prefix
// (by path element) paths, longest first.
func route(ing networkingv1.Ingress, reqPath string) (string, error) {
	regex := ing.Annotations["nginx.ingress.kubernetes.io/use-regex"] == "true"
	var paths []networkingv1.HTTPIngressPath
	for _, r := range ing.Spec.Rules {
		paths = append(paths, r.HTTP.Paths...)
	}
	sort.SliceStable(paths, func(i, j int) bool { return len(paths[i].Path) > len(paths[j].Path) })
	for _, p := range paths {
		literal := p.PathType != nil && *p.PathType != networkingv1.PathTypeImplementationSpecific
		if literal && !plainPath.MatchString(p.Path) {
			// ingress-nginx's strict path validation rejects these.
			return "", fmt.Errorf("path %q is not a valid %s path (regular expressions need ImplementationSpecific)", p.Path, *p.PathType)
		}
		var match bool
		switch {
		case regex:
			re, err := regexp.Compile("(?i)^" + p.Path)
			if err != nil {
				return "", fmt.Errorf("path %q is not a regular expression: %w", p.Path, err)
			}
			match = re.MatchString(reqPath)
		case p.PathType != nil && *p.PathType == networkingv1.PathTypeExact:
			match = reqPath == p.Path
		case p.PathType != nil && *p.PathType == networkingv1.PathTypePrefix:
			pre := strings.TrimSuffix(p.Path, "/")
			match = reqPath == pre || strings.HasPrefix(reqPath, pre+"/") || pre == ""
		default:
			return "", fmt.Errorf("path %q: ImplementationSpecific needs nginx.ingress.kubernetes.io/use-regex", p.Path)
		}
		if match {
			return p.Backend.Service.Name, nil
		}
	}
	return "", nil
}

func (c *checker) autoscaling(overlay string) {
	scaled := map[string]string{} // Deployment → autoscaler
	for _, so := range c.r.ScaledObjects {
		name := so.Spec.ScaleTargetRef.Name
		scaled[name] = "ScaledObject " + so.Name
		if so.Spec.MinReplicaCount < 1 {
			c.errorf("ScaledObject %s: minReplicaCount must be at least 1 (the dispatcher's retry scheduler and the consumers must run)", so.Name)
		}
		want, ok := backlogScaling[name]
		if !ok {
			c.errorf("ScaledObject %s: scales %s, which has no backlog to scale on", so.Name, name)
			continue
		}
		if !slices.ContainsFunc(so.Spec.Triggers, func(tr struct {
			Type     string            `json:"type"`
			Metadata map[string]string `json:"metadata"`
		}) bool {
			return tr.Type == "nats-jetstream" && tr.Metadata["stream"] == want[0] && tr.Metadata["consumer"] == want[1] &&
				tr.Metadata["natsServerMonitoringEndpoint"] != "" && tr.Metadata["lagThreshold"] != ""
		}) {
			c.errorf("ScaledObject %s: no nats-jetstream trigger on stream %s consumer %s", so.Name, want[0], want[1])
		}
	}
	for _, h := range c.r.HPAs {
		if h.Spec.ScaleTargetRef.Kind != "Deployment" {
			c.errorf("HPA %s: target kind %s", h.Name, h.Spec.ScaleTargetRef.Kind)
		}
		if prev, dup := scaled[h.Spec.ScaleTargetRef.Name]; dup {
			c.errorf("HPA %s: %s is already scaled by %s", h.Name, h.Spec.ScaleTargetRef.Name, prev)
		}
		scaled[h.Spec.ScaleTargetRef.Name] = "HPA " + h.Name
	}
	for name, by := range scaled {
		d := c.deploymentNamed(name)
		switch {
		case d == nil:
			c.errorf("%s: targets missing Deployment %s", by, name)
		case d.Spec.Replicas != nil:
			c.errorf("Deployment %s: sets replicas although %s scales it (kubectl apply would reset the autoscaler)", name, by)
		}
	}
	for _, d := range c.r.Deployments {
		switch overlay {
		case "dev":
			if d.Spec.Replicas == nil || *d.Spec.Replicas != 1 {
				c.errorf("dev: Deployment %s must run one replica", d.Name)
			}
		default:
			if _, ok := scaled[d.Name]; !ok && (d.Spec.Replicas == nil || *d.Spec.Replicas < 2) {
				c.errorf("%s: Deployment %s neither autoscaled nor at 2+ replicas", overlay, d.Name)
			}
			if _, ok := backlogScaling[d.Name]; ok && scaled[d.Name] == "" {
				c.errorf("%s: Deployment %s is not autoscaled", overlay, d.Name)
			}
			if !slices.ContainsFunc(c.r.PDBs, func(p policyv1.PodDisruptionBudget) bool {
				return labels.SelectorFromSet(p.Spec.Selector.MatchLabels).Matches(labels.Set(d.Spec.Template.Labels))
			}) {
				c.errorf("%s: Deployment %s has no PodDisruptionBudget", overlay, d.Name)
			}
		}
	}
	for _, p := range c.r.PDBs {
		sel, err := metav1.LabelSelectorAsSelector(p.Spec.Selector)
		if err != nil || len(c.selectedPods(sel)) == 0 {
			c.errorf("PodDisruptionBudget %s selects no pod", p.Name)
		}
	}
}

func (c *checker) monitoring() {
	for _, sm := range c.r.ServiceMonitors {
		sel, err := metav1.LabelSelectorAsSelector(&sm.Spec.Selector)
		if err != nil {
			c.errorf("ServiceMonitor %s: %v", sm.Name, err)
			continue
		}
		n := 0
		for _, s := range c.r.Services {
			if !sel.Matches(labels.Set(s.Labels)) {
				continue
			}
			n++
			for _, ep := range sm.Spec.Endpoints {
				if !slices.ContainsFunc(s.Spec.Ports, func(p corev1.ServicePort) bool { return p.Name == ep.Port }) {
					c.errorf("ServiceMonitor %s: Service %s has no port %q", sm.Name, s.Name, ep.Port)
				}
				if ep.Path != "/metrics" {
					c.errorf("ServiceMonitor %s: path %q, want /metrics", sm.Name, ep.Path)
				}
			}
		}
		if n != len(c.r.Deployments) {
			c.errorf("ServiceMonitor %s: selects %d Services, want one per service (%d)", sm.Name, n, len(c.r.Deployments))
		}
	}
}
