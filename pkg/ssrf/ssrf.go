// Package ssrf keeps webhook deliveries away from internal networks
// (CONTRACT 3.4). [Blocked] says which addresses are refused; [Dialer]
// resolves a host once, checks every address it resolved to, and connects to
// the checked IP literal, so a DNS answer that changes between the check and
// the connection (rebinding) cannot bypass it, and neither can a redirect: each
// new connection goes through the same check. [CheckURL] validates an
// endpoint URL when it is created.
//
// Use the Dialer as an http.Transport's DialContext with Proxy set to nil (a
// proxy would make the dialer check the proxy, not the destination).
package ssrf

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"net/url"
	"strconv"
	"strings"
	"syscall"
	"time"
)

// ErrBlocked is wrapped by every refusal of a destination address.
var ErrBlocked = errors.New("destination address not allowed")

// ErrUnresolvable is wrapped by [CheckURL] when the URL's host does not
// resolve.
var ErrUnresolvable = errors.New("host does not resolve")

// ErrInvalidURL is wrapped by [CheckURL] for a URL that is not an absolute
// http or https URL with a host.
var ErrInvalidURL = errors.New("invalid destination URL")

// CheckTimeout bounds the DNS lookup of [CheckURL].
const CheckTimeout = 3 * time.Second

type blockedRange struct {
	prefix netip.Prefix
	reason string
}

func mustRanges(pairs ...string) []blockedRange {
	out := make([]blockedRange, 0, len(pairs)/2)
	for i := 0; i < len(pairs); i += 2 {
		out = append(out, blockedRange{netip.MustParsePrefix(pairs[i]), pairs[i+1]})
	}
	return out
}

// Special-purpose ranges (IANA IPv4/IPv6 special-purpose registries) that no
// webhook receiver on the public internet uses.
var (
	blocked4 = mustRanges(
		"0.0.0.0/8", "unspecified",
		"10.0.0.0/8", "private",
		"100.64.0.0/10", "shared address space (CGNAT)",
		"127.0.0.0/8", "loopback",
		"169.254.0.0/16", "link-local",
		"172.16.0.0/12", "private",
		"192.0.0.0/24", "IETF protocol assignment",
		"192.0.2.0/24", "documentation",
		"192.88.99.0/24", "6to4 relay anycast",
		"192.168.0.0/16", "private",
		"198.18.0.0/15", "benchmarking",
		"198.51.100.0/24", "documentation",
		"203.0.113.0/24", "documentation",
		"224.0.0.0/4", "multicast",
		"240.0.0.0/4", "reserved", // includes 255.255.255.255 broadcast
	)
	blocked6 = mustRanges(
		"::/128", "unspecified",
		"::1/128", "loopback",
		"::/96", "IPv4-compatible (deprecated)",
		"100::/64", "discard-only",
		"2001::/23", "IETF protocol assignment", // includes Teredo 2001::/32
		"2001:db8::/32", "documentation",
		"3fff::/20", "documentation",
		"64:ff9b:1::/48", "local-use NAT64",
		"fc00::/7", "private (unique local)",
		"fe80::/10", "link-local",
		"fec0::/10", "site-local (deprecated)",
		"ff00::/8", "multicast",
	)
	nat64     = netip.MustParsePrefix("64:ff9b::/96")
	sixToFour = netip.MustParsePrefix("2002::/16")
)

// Blocked reports whether ip must not be dialled: loopback, private,
// link-local, multicast, unspecified, CGNAT, broadcast, documentation and
// other special-purpose addresses, in IPv4 or IPv6, including IPv4 addresses
// embedded in IPv6 (IPv4-mapped, NAT64 64:ff9b::/96, 6to4). An invalid
// address is blocked.
func Blocked(ip netip.Addr) bool {
	return reason(ip) != ""
}

// reason returns why ip is blocked, or "" when it is allowed.
func reason(ip netip.Addr) string {
	if !ip.IsValid() {
		return "invalid"
	}
	ip = ip.Unmap().WithZone("")
	if ip.Is4() {
		for _, r := range blocked4 {
			if r.prefix.Contains(ip) {
				return r.reason
			}
		}
		return ""
	}
	for _, r := range blocked6 {
		if r.prefix.Contains(ip) {
			return r.reason
		}
	}
	b := ip.As16()
	switch {
	case nat64.Contains(ip):
		if why := reason(netip.AddrFrom4([4]byte(b[12:16]))); why != "" {
			return why + " (via NAT64)"
		}
	case sixToFour.Contains(ip):
		if why := reason(netip.AddrFrom4([4]byte(b[2:6]))); why != "" {
			return why + " (via 6to4)"
		}
	}
	return ""
}

// blockedError is the error for a refused address; it wraps [ErrBlocked].
func blockedError(host string, ip netip.Addr) error {
	why := reason(ip)
	if host == "" || host == ip.String() {
		return fmt.Errorf("%w: %s is %s", ErrBlocked, ip, why)
	}
	return fmt.Errorf("%w: %s resolves to %s (%s)", ErrBlocked, host, ip, why)
}

// Resolver looks up a host's addresses; *net.Resolver implements it.
// network is "ip", "ip4" or "ip6".
type Resolver interface {
	LookupNetIP(ctx context.Context, network, host string) ([]netip.Addr, error)
}

// Dialer opens TCP connections only to allowed addresses. It is safe for
// concurrent use.
type Dialer struct {
	allowPrivate bool
	timeout      time.Duration
	resolver     Resolver
	dialer       net.Dialer
}

// NewDialer returns a Dialer. With allowPrivate it checks nothing (for
// development and tests, HOOKLINE_ALLOW_PRIVATE_DESTINATIONS=true). timeout
// bounds each DialContext call, DNS lookup included; 0 means no bound besides
// the context's.
func NewDialer(allowPrivate bool, timeout time.Duration) *Dialer {
	d := &Dialer{allowPrivate: allowPrivate, timeout: timeout, resolver: net.DefaultResolver}
	if !allowPrivate {
		// Defence in depth: the socket's actual peer is checked again just
		// before connect, whatever produced the address.
		d.dialer.ControlContext = controlBlocked
	}
	return d
}

// DialContext resolves addr's host, refuses (with an error wrapping
// [ErrBlocked]) if any of its addresses is blocked, and otherwise connects to
// the resolved IP addresses in order until one answers. Only TCP networks are
// supported. Its signature matches http.Transport.DialContext.
func (d *Dialer) DialContext(ctx context.Context, network, addr string) (net.Conn, error) {
	var ipNetwork string
	switch network {
	case "tcp":
		ipNetwork = "ip"
	case "tcp4":
		ipNetwork = "ip4"
	case "tcp6":
		ipNetwork = "ip6"
	default:
		return nil, fmt.Errorf("dial %s %s: unsupported network", network, addr)
	}
	host, port, err := net.SplitHostPort(addr)
	if err != nil {
		return nil, fmt.Errorf("dial %s: %w", addr, err)
	}
	if d.timeout > 0 {
		var cancel context.CancelFunc
		ctx, cancel = context.WithTimeout(ctx, d.timeout)
		defer cancel()
	}
	ips, err := d.resolve(ctx, ipNetwork, host)
	if err != nil {
		return nil, err
	}
	var errs []error
	for _, ip := range ips {
		conn, err := d.dialer.DialContext(ctx, network, net.JoinHostPort(ip.String(), port))
		if err == nil {
			return conn, nil
		}
		errs = append(errs, err)
		if ctx.Err() != nil {
			break
		}
	}
	return nil, errors.Join(errs...)
}

// resolve returns host's addresses, all checked unless d.allowPrivate.
func (d *Dialer) resolve(ctx context.Context, network, host string) ([]netip.Addr, error) {
	if ip, err := netip.ParseAddr(host); err == nil {
		if !d.allowPrivate && Blocked(ip) {
			return nil, blockedError("", ip)
		}
		return []netip.Addr{ip}, nil
	}
	ips, err := d.resolver.LookupNetIP(ctx, network, host)
	if err != nil {
		return nil, fmt.Errorf("resolve %s: %w", host, err)
	}
	if len(ips) == 0 {
		return nil, fmt.Errorf("resolve %s: no addresses", host)
	}
	for i, ip := range ips {
		ip = ip.Unmap()
		if !d.allowPrivate && Blocked(ip) {
			return nil, blockedError(host, ip)
		}
		ips[i] = ip
	}
	return ips, nil
}

// controlBlocked runs before connect(2) with the literal peer address.
func controlBlocked(_ context.Context, _, address string, _ syscall.RawConn) error {
	ap, err := netip.ParseAddrPort(address)
	if err != nil {
		return fmt.Errorf("%w: unparsable peer %q", ErrBlocked, address)
	}
	if Blocked(ap.Addr()) {
		return blockedError("", ap.Addr())
	}
	return nil
}

// CheckURL validates an endpoint URL at create or update time: an absolute
// http or https URL with a host and a valid port (else [ErrInvalidURL]), whose
// host resolves (else [ErrUnresolvable]) and, unless allowPrivate, only to
// allowed addresses (else [ErrBlocked]). r nil means net.DefaultResolver; the
// lookup is bounded by [CheckTimeout]. The error message is fit for an API
// client.
func CheckURL(ctx context.Context, raw string, allowPrivate bool, r *net.Resolver) error {
	u, err := url.Parse(raw)
	if err != nil {
		return fmt.Errorf("%w: %s", ErrInvalidURL, strings.TrimPrefix(err.Error(), "parse "))
	}
	if u.Scheme != "http" && u.Scheme != "https" {
		return fmt.Errorf("%w: scheme must be http or https", ErrInvalidURL)
	}
	host := u.Hostname()
	if host == "" {
		return fmt.Errorf("%w: host required", ErrInvalidURL)
	}
	if p := u.Port(); p != "" {
		if n, err := strconv.Atoi(p); err != nil || n < 1 || n > 65535 {
			return fmt.Errorf("%w: port %q out of range", ErrInvalidURL, p)
		}
	}
	var res Resolver = net.DefaultResolver
	if r != nil {
		res = r
	}
	return checkHost(ctx, res, host, allowPrivate)
}

func checkHost(ctx context.Context, r Resolver, host string, allowPrivate bool) error {
	if ip, err := netip.ParseAddr(host); err == nil {
		if !allowPrivate && Blocked(ip) {
			return blockedError("", ip)
		}
		return nil
	}
	ctx, cancel := context.WithTimeout(ctx, CheckTimeout)
	defer cancel()
	ips, err := r.LookupNetIP(ctx, "ip", host)
	if err != nil || len(ips) == 0 {
		if cerr := context.Cause(ctx); cerr != nil && !errors.Is(cerr, context.DeadlineExceeded) {
			return fmt.Errorf("resolve %s: %w", host, cerr)
		}
		return fmt.Errorf("%w: %s", ErrUnresolvable, host)
	}
	if allowPrivate {
		return nil
	}
	for _, ip := range ips {
		if Blocked(ip) {
			return blockedError(host, ip.Unmap())
		}
	}
	return nil
}
