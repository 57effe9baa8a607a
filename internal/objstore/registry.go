package objstore

import (
	"context"
	"fmt"
	"net/url"
	"sort"
	"strings"
)

// OpenOptions are the settings common to every backend.
type OpenOptions struct {
	// Create makes an empty store where none exists yet (file://).
	Create bool
}

// Opener opens a store from its parsed URL.
type Opener func(ctx context.Context, u *url.URL, opts OpenOptions) (Store, error)

// Registry maps URL schemes to backends. Build one with the backends a
// program links (see package all); there is no global registry.
type Registry struct {
	openers map[string]Opener
	help    map[string]string
}

// NewRegistry returns an empty registry.
func NewRegistry() *Registry {
	return &Registry{openers: map[string]Opener{}, help: map[string]string{}}
}

// Register adds a backend for scheme; usage is the URL form shown in
// errors, such as "file:///PATH".
func (r *Registry) Register(scheme, usage string, o Opener) {
	r.openers[scheme] = o
	r.help[scheme] = usage
}

// Schemes returns the registered URL forms, sorted.
func (r *Registry) Schemes() []string {
	var s []string
	for _, u := range r.help {
		s = append(s, u)
	}
	sort.Strings(s)
	return s
}

// Open opens the store named by raw. A string without "://" is a
// directory of the file backend.
func (r *Registry) Open(ctx context.Context, raw string, opts OpenOptions) (Store, error) {
	if raw == "" {
		return nil, fmt.Errorf("%w: empty store URL", ErrBadURL)
	}
	if !strings.Contains(raw, "://") {
		raw = "file://" + raw
		if !strings.HasPrefix(raw, "file:///") {
			raw = "file://./" + strings.TrimPrefix(raw, "file://")
		}
	}
	u, err := url.Parse(raw)
	if err != nil {
		return nil, fmt.Errorf("%w: %v", ErrBadURL, err)
	}
	o := r.openers[u.Scheme]
	if o == nil {
		return nil, fmt.Errorf("%w: unknown scheme %q in %q; this build knows %s",
			ErrBadURL, u.Scheme, raw, strings.Join(r.Schemes(), ", "))
	}
	return o(ctx, u, opts)
}

// FilePath returns the directory a file:// URL names: file:///abs/dir,
// or file://./rel/dir relative to the working directory.
func FilePath(u *url.URL) (string, error) {
	p := u.Path
	switch u.Host {
	case "", "localhost":
	case ".", "..":
		p = u.Host + p
	default:
		return "", fmt.Errorf("%w: file URL %q names host %q; use file:///ABSOLUTE/PATH or file://./RELATIVE/PATH",
			ErrBadURL, u.String(), u.Host)
	}
	if p == "" {
		return "", fmt.Errorf("%w: file URL %q has no path", ErrBadURL, u.String())
	}
	return p, nil
}
