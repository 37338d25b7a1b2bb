// Package localpg initialises, starts and stops a private PostgreSQL cluster
// with the machine's own PostgreSQL binaries, for hookline-dev and for tests
// that must stop and start a server of their own. Run as root, it runs the
// server as the "postgres" user, since PostgreSQL refuses root.
package localpg

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"os/exec"
	"os/user"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/jackc/pgx/v5"
)

// Cluster is a local PostgreSQL data directory and the server running on it.
type Cluster struct {
	Dir  string
	Port int
	log  *slog.Logger
	bin  string
	cred *syscall.Credential
	uid  int
	gid  int
	// started is true when this process started the server (and so stops it).
	started bool
}

// New prepares a cluster in dir listening on 127.0.0.1:port.
func New(dir string, port int, log *slog.Logger) (*Cluster, error) {
	abs, err := filepath.Abs(dir)
	if err != nil {
		return nil, fmt.Errorf("resolve %s: %w", dir, err)
	}
	bin, err := findBinDir()
	if err != nil {
		return nil, err
	}
	c := &Cluster{Dir: abs, Port: port, log: log, bin: bin, uid: -1, gid: -1}
	if os.Geteuid() == 0 {
		u, err := user.Lookup("postgres")
		if err != nil {
			return nil, errors.New("running as root needs a 'postgres' user to run PostgreSQL (set HOOKLINE_DATABASE_URL to use an existing server)")
		}
		uid, _ := strconv.Atoi(u.Uid)
		gid, _ := strconv.Atoi(u.Gid)
		c.uid, c.gid = uid, gid
		c.cred = &syscall.Credential{Uid: uint32(uid), Gid: uint32(gid)} //nolint:gosec // ids come from the passwd database
	}
	return c, nil
}

// URL is the connection URL of database db.
func (c *Cluster) URL(db string) string {
	return fmt.Sprintf("postgres://postgres@127.0.0.1:%d/%s?sslmode=disable", c.Port, db)
}

// Start initialises the data directory on first use, starts the server
// unless one already runs on it, and creates database db.
func (c *Cluster) Start(ctx context.Context, db string) error {
	if _, err := os.Stat(filepath.Join(c.Dir, "PG_VERSION")); errors.Is(err, os.ErrNotExist) {
		if err := c.initdb(ctx); err != nil {
			return err
		}
	}
	if c.run(ctx, "pg_ctl", "-D", c.Dir, "status") != nil {
		opts := fmt.Sprintf("-p %d -c listen_addresses=127.0.0.1 -c unix_socket_directories=%s", c.Port, c.Dir)
		if err := c.run(ctx, "pg_ctl", "-D", c.Dir, "-l", filepath.Join(c.Dir, "server.log"), "-o", opts, "-w", "-t", "60", "start"); err != nil {
			return fmt.Errorf("start PostgreSQL (log: %s): %w", filepath.Join(c.Dir, "server.log"), err)
		}
		c.started = true
	}
	return c.createDatabase(ctx, db)
}

// Stop stops the server if Start started it.
func (c *Cluster) Stop(ctx context.Context) error {
	if !c.started {
		return nil
	}
	return c.run(ctx, "pg_ctl", "-D", c.Dir, "-m", "fast", "-w", "stop")
}

func (c *Cluster) initdb(ctx context.Context) error {
	c.log.Info("initialising local PostgreSQL", "dir", c.Dir)
	if err := os.MkdirAll(c.Dir, 0o700); err != nil {
		return fmt.Errorf("create %s: %w", c.Dir, err)
	}
	if c.cred != nil {
		if err := os.Chown(c.Dir, c.uid, c.gid); err != nil {
			return fmt.Errorf("chown %s to postgres: %w", c.Dir, err)
		}
		if err := reachable(c.Dir); err != nil {
			return err
		}
	}
	if err := c.run(ctx, "initdb", "-D", c.Dir, "-U", "postgres", "-A", "trust", "-E", "UTF8", "--no-sync"); err != nil {
		return fmt.Errorf("initdb: %w", err)
	}
	return nil
}

func (c *Cluster) createDatabase(ctx context.Context, db string) error {
	cctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	conn, err := pgx.Connect(cctx, c.URL("postgres"))
	if err != nil {
		return fmt.Errorf("connect to local PostgreSQL: %w", err)
	}
	defer conn.Close(context.WithoutCancel(ctx))
	var exists bool
	if err := conn.QueryRow(cctx, "SELECT EXISTS (SELECT 1 FROM pg_database WHERE datname = $1)", db).Scan(&exists); err != nil {
		return fmt.Errorf("look up database %s: %w", db, err)
	}
	if !exists {
		if _, err := conn.Exec(cctx, "CREATE DATABASE "+pgx.Identifier{db}.Sanitize()); err != nil {
			return fmt.Errorf("create database %s: %w", db, err)
		}
	}
	return nil
}

func (c *Cluster) run(ctx context.Context, name string, args ...string) error {
	cmd := exec.CommandContext(ctx, filepath.Join(c.bin, name), args...) //nolint:gosec // fixed binaries from the PostgreSQL installation
	cmd.Dir = c.Dir
	if _, err := os.Stat(c.Dir); err != nil {
		cmd.Dir = "/"
	}
	if c.cred != nil {
		cmd.SysProcAttr = &syscall.SysProcAttr{Credential: c.cred}
		cmd.Env = append(os.Environ(), "HOME=/tmp")
	}
	out, err := cmd.CombinedOutput()
	if err != nil {
		return fmt.Errorf("%s: %w: %s", name, err, strings.TrimSpace(string(out)))
	}
	return nil
}

// reachable checks that every directory above dir lets others traverse it:
// the server runs as the postgres user and must reach its data directory.
func reachable(dir string) error {
	for d := filepath.Dir(dir); ; d = filepath.Dir(d) {
		fi, err := os.Stat(d)
		if err != nil {
			return fmt.Errorf("stat %s: %w", d, err)
		}
		if fi.Mode().Perm()&0o001 == 0 {
			return fmt.Errorf("the postgres user cannot reach %s: %s is not traversable (chmod o+x it, or choose another --dir)", dir, d)
		}
		if d == filepath.Dir(d) {
			return nil
		}
	}
}

// findBinDir finds initdb and pg_ctl: on PATH, or the newest
// /usr/lib/postgresql/<version>/bin (Debian keeps them off PATH).
func findBinDir() (string, error) {
	if p, err := exec.LookPath("pg_ctl"); err == nil {
		if real, err := filepath.EvalSymlinks(p); err == nil {
			p = real
		}
		dir := filepath.Dir(p)
		if _, err := os.Stat(filepath.Join(dir, "initdb")); err == nil {
			return dir, nil
		}
	}
	dirs, _ := filepath.Glob("/usr/lib/postgresql/*/bin")
	sort.Slice(dirs, func(i, j int) bool { return versionOf(dirs[i]) > versionOf(dirs[j]) })
	for _, d := range dirs {
		if _, err := os.Stat(filepath.Join(d, "initdb")); err == nil {
			return d, nil
		}
	}
	return "", errors.New("PostgreSQL binaries (initdb, pg_ctl) not found: install PostgreSQL or set HOOKLINE_DATABASE_URL")
}

func versionOf(binDir string) int {
	v, _ := strconv.Atoi(filepath.Base(filepath.Dir(binDir)))
	return v
}
