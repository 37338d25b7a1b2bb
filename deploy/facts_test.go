package deploy

import (
	"bufio"
	"fmt"
	"go/ast"
	"go/parser"
	"go/token"
	"io/fs"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"testing"

	corev1 "k8s.io/api/core/v1"
)

// repoRoot is the workspace root, seen from this module.
const repoRoot = ".."

// binary is what one Dockerfile builds.
type binary struct {
	Name       string // output name, e.g. hookline-ingest
	Package    string // ./services/ingest/cmd/hookline-ingest
	Path       string // where the final image has it, e.g. /usr/local/bin/hookline-ingest
	Dockerfile string
}

// facts are what the manifests are checked against: what the images build,
// which environment variables each binary reads, which Secret keys exist.
type facts struct {
	Binaries   map[string]binary   // by name
	Env        map[string][]string // variables each binary reads, by binary name
	SecretName string
	SecretKeys []string
}

// pendingEnv may name variables the manifests set before the services read
// them (while both are being written); keep it empty otherwise.
var pendingEnv = []string{}

// runtimeEnv are read by the Go runtime itself.
var runtimeEnv = []string{"GOMEMLIMIT", "GOMAXPROCS", "GODEBUG"}

// envAllowed reports whether binary reads name: a variable found in its Go
// source, one the Go runtime reads, or OTEL_* (CONTRACT 1: the standard
// OpenTelemetry variables).
func (f facts) envAllowed(bin, name string) bool {
	return slices.Contains(f.Env[bin], name) || slices.Contains(runtimeEnv, name) ||
		slices.Contains(pendingEnv, name) || strings.HasPrefix(name, "OTEL_")
}

func loadFacts(t *testing.T) facts {
	t.Helper()
	bins, err := dockerBinaries(filepath.Join("docker"))
	if err != nil {
		t.Fatal(err)
	}
	f := facts{Binaries: map[string]binary{}, Env: map[string][]string{}}
	for _, b := range bins {
		f.Binaries[b.Name] = b
		// A service binary reads what pkg/ and its own module read.
		svcDir := filepath.Dir(filepath.Dir(filepath.Join(repoRoot, b.Package)))
		env, err := envNames(filepath.Join(repoRoot, "pkg"), svcDir)
		if err != nil {
			t.Fatal(err)
		}
		f.Env[b.Name] = env
	}
	var secret corev1.Secret
	data, err := os.ReadFile(filepath.Join("k8s", "examples", "secret.example.yaml"))
	if err != nil {
		t.Fatal(err)
	}
	if err := strictYAML(data, &secret); err != nil {
		t.Fatalf("example secret: %v", err)
	}
	f.SecretName = secret.Name
	for k := range secret.StringData {
		f.SecretKeys = append(f.SecretKeys, k)
	}
	for k := range secret.Data {
		f.SecretKeys = append(f.SecretKeys, k)
	}
	return f
}

var envLiteral = regexp.MustCompile(`^[A-Z][A-Z0-9_]*$`)

// envNames lists the environment variables the non-test Go code under dirs
// reads: constants named Env* and string literals passed to a function whose
// name contains "env" (os.Getenv, getenv, envOr, LookupEnv…).
func envNames(dirs ...string) ([]string, error) {
	seen := map[string]bool{}
	fset := token.NewFileSet()
	for _, dir := range dirs {
		err := filepath.WalkDir(dir, func(path string, d fs.DirEntry, err error) error {
			if err != nil {
				return err
			}
			if d.IsDir() || !strings.HasSuffix(path, ".go") || strings.HasSuffix(path, "_test.go") {
				return nil
			}
			file, err := parser.ParseFile(fset, path, nil, parser.SkipObjectResolution)
			if err != nil {
				return fmt.Errorf("parse %s: %w", path, err)
			}
			lit := func(e ast.Expr) {
				if bl, ok := e.(*ast.BasicLit); ok && bl.Kind == token.STRING {
					if s, err := strconv.Unquote(bl.Value); err == nil && envLiteral.MatchString(s) {
						seen[s] = true
					}
				}
			}
			ast.Inspect(file, func(n ast.Node) bool {
				switch n := n.(type) {
				case *ast.ValueSpec:
					for i, name := range n.Names {
						if strings.HasPrefix(name.Name, "Env") && i < len(n.Values) {
							lit(n.Values[i])
						}
					}
				case *ast.CallExpr:
					var fn string
					switch f := n.Fun.(type) {
					case *ast.Ident:
						fn = f.Name
					case *ast.SelectorExpr:
						fn = f.Sel.Name
					}
					if strings.Contains(strings.ToLower(fn), "env") {
						for _, a := range n.Args {
							lit(a)
						}
					}
				}
				return true
			})
			return nil
		})
		if err != nil {
			return nil, fmt.Errorf("scan %s: %w", dir, err)
		}
	}
	var out []string
	for k := range seen {
		out = append(out, k)
	}
	slices.Sort(out)
	return out, nil
}

var (
	goBuildRe = regexp.MustCompile(`go build .*-o (/\S+)\s+(\./\S+)`)
	copyRe    = regexp.MustCompile(`^COPY\s+(.*)$`)
)

// dockerfileLines joins continuation lines and drops comments.
func dockerfileLines(path string) ([]string, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	var out []string
	var cur strings.Builder
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		line := strings.TrimSpace(sc.Text())
		if strings.HasPrefix(line, "#") || (line == "" && cur.Len() == 0) {
			continue
		}
		if cont, ok := strings.CutSuffix(line, `\`); ok {
			cur.WriteString(cont + " ")
			continue
		}
		cur.WriteString(line)
		out = append(out, cur.String())
		cur.Reset()
	}
	return out, sc.Err()
}

// dockerBinaries parses every Dockerfile in dir and checks it against the
// workspace: what it copies exists, the go.work modules are all present, the
// package it builds is a main package that make build builds under the same
// name, the build is static and trimmed, and the final stage runs the binary
// as a non-root user.
func dockerBinaries(dir string) ([]binary, error) {
	files, err := filepath.Glob(filepath.Join(dir, "*.Dockerfile"))
	if err != nil || len(files) == 0 {
		return nil, fmt.Errorf("no Dockerfiles in %s (%v)", dir, err)
	}
	makeBuild, err := makefileBuilds()
	if err != nil {
		return nil, err
	}
	workUses, err := goWorkUses()
	if err != nil {
		return nil, err
	}
	var out []binary
	for _, path := range files {
		b, err := parseDockerfile(path, makeBuild, workUses)
		if err != nil {
			return nil, fmt.Errorf("%s: %w", path, err)
		}
		out = append(out, b)
	}
	return out, nil
}

func parseDockerfile(path string, makeBuild map[string]string, workUses []string) (binary, error) {
	lines, err := dockerfileLines(path)
	if err != nil {
		return binary{}, err
	}
	b := binary{Dockerfile: path}
	var stages []string // FROM lines
	var copied []string // sources copied from the build context
	var user, entrypoint, out, finalCopyDest string
	env := ""
	for _, l := range lines {
		switch {
		case strings.HasPrefix(l, "FROM "):
			stages = append(stages, l)
		case strings.HasPrefix(l, "ENV "):
			env += l + " "
		case strings.HasPrefix(l, "USER "):
			user = strings.TrimSpace(strings.TrimPrefix(l, "USER "))
		case strings.HasPrefix(l, "ENTRYPOINT "):
			entrypoint = strings.TrimSpace(strings.TrimPrefix(l, "ENTRYPOINT "))
		case copyRe.MatchString(l):
			fields := strings.Fields(copyRe.FindStringSubmatch(l)[1])
			if strings.HasPrefix(fields[0], "--from=") {
				if len(stages) > 1 && len(fields) == 3 && fields[1] == out {
					finalCopyDest = fields[2]
				}
				continue
			}
			copied = append(copied, fields[:len(fields)-1]...)
		}
		if m := goBuildRe.FindStringSubmatch(l); m != nil {
			out, b.Package = m[1], m[2]
			if !strings.Contains(l, "-trimpath") || !strings.Contains(l, "pkg/version.Version=") {
				return b, fmt.Errorf("go build must use -trimpath and set pkg/version.Version: %s", l)
			}
		}
	}
	if len(stages) != 2 || !strings.HasPrefix(stages[0], "FROM golang:1.26") {
		return b, fmt.Errorf("want two stages, a golang:1.26 builder and a runtime: %q", stages)
	}
	if !strings.Contains(stages[1], "distroless/static") && !strings.Contains(stages[1], "scratch") {
		return b, fmt.Errorf("runtime stage must be distroless static or scratch: %s", stages[1])
	}
	if !strings.Contains(env, "CGO_ENABLED=0") {
		return b, fmt.Errorf("CGO_ENABLED=0 not set")
	}
	if out == "" {
		return b, fmt.Errorf("no go build -o line")
	}
	b.Name = filepath.Base(out)
	for _, src := range copied {
		if m, err := filepath.Glob(filepath.Join(repoRoot, src)); err != nil || len(m) == 0 {
			return b, fmt.Errorf("COPY source %s does not exist in the repository", src)
		}
	}
	for _, use := range workUses {
		mod := strings.TrimPrefix(use, "./") + "/go.mod"
		if !slices.ContainsFunc(copied, func(c string) bool {
			c = strings.TrimSuffix(c, "/")
			matched, _ := filepath.Match(c, mod)
			return c == "." || matched || strings.HasPrefix(mod, c+"/")
		}) {
			return b, fmt.Errorf("go.work uses %s but its go.mod is not copied: the workspace build would fail", use)
		}
	}
	if err := isMainPackage(filepath.Join(repoRoot, b.Package)); err != nil {
		return b, err
	}
	if want, ok := makeBuild[b.Name]; !ok || want != b.Package {
		return b, fmt.Errorf("builds %s from %s, make build builds it from %q", b.Name, b.Package, want)
	}
	if user == "" || user == "root" || strings.HasPrefix(user, "0:") || user == "0" {
		return b, fmt.Errorf("final stage must set a non-root USER, got %q", user)
	}
	if finalCopyDest == "" || filepath.Base(finalCopyDest) != b.Name {
		return b, fmt.Errorf("final stage does not copy %s from the build stage", out)
	}
	b.Path = finalCopyDest
	if entrypoint != fmt.Sprintf("[%q]", b.Path) {
		return b, fmt.Errorf("ENTRYPOINT %s, want [%q]", entrypoint, b.Path)
	}
	return b, nil
}

func isMainPackage(dir string) error {
	files, err := filepath.Glob(filepath.Join(dir, "*.go"))
	if err != nil || len(files) == 0 {
		return fmt.Errorf("build target %s has no Go files", dir)
	}
	for _, f := range files {
		if strings.HasSuffix(f, "_test.go") {
			continue
		}
		file, err := parser.ParseFile(token.NewFileSet(), f, nil, parser.PackageClauseOnly)
		if err != nil {
			return fmt.Errorf("parse %s: %w", f, err)
		}
		if file.Name.Name != "main" {
			return fmt.Errorf("build target %s is package %s, not main", dir, file.Name.Name)
		}
		return nil
	}
	return fmt.Errorf("build target %s has no non-test Go files", dir)
}

var makeBuildRe = regexp.MustCompile(`go build .*-o bin/(\S+)\s+(\./\S+)`)

// makefileBuilds maps each binary make build produces to its package.
func makefileBuilds() (map[string]string, error) {
	data, err := os.ReadFile(filepath.Join(repoRoot, "Makefile"))
	if err != nil {
		return nil, err
	}
	out := map[string]string{}
	for _, m := range makeBuildRe.FindAllStringSubmatch(string(data), -1) {
		out[m[1]] = m[2]
	}
	return out, nil
}

// goWorkUses lists the module directories of go.work.
func goWorkUses() ([]string, error) {
	data, err := os.ReadFile(filepath.Join(repoRoot, "go.work"))
	if err != nil {
		return nil, err
	}
	var out []string
	in := false
	for _, l := range strings.Split(string(data), "\n") {
		l = strings.TrimSpace(l)
		switch {
		case l == "use (":
			in = true
		case in && l == ")":
			in = false
		case in && l != "":
			out = append(out, l)
		case strings.HasPrefix(l, "use ./"):
			out = append(out, strings.TrimPrefix(l, "use "))
		}
	}
	return out, nil
}
