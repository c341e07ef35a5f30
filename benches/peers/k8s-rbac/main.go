// Command k8s-rbac runs Kubernetes' own RBAC authorizer (k8s.io/kubernetes/plugin/pkg/auth/authorizer/rbac)
// over a policy file, fed through informer-style listers (client-go indexers wrapped by the listers the
// kube-apiserver uses), so ksiam-rbac can be compared with it on the same data.
//
//	k8s-rbac -policy P.json -requests R.json -mode decide       # one allow/deny line per request
//	k8s-rbac -policy P.json -cases C.json -mode bench -count 5  # testing.Benchmark, one BENCH line per run
//	k8s-rbac -version                                           # versions of Go and of the peer modules
//
// The policy is a v1 List (or a JSON array) of rbac.authorization.k8s.io/v1 ClusterRoles, Roles,
// ClusterRoleBindings and RoleBindings; requests are JSON arrays of access requests as written by
// ksiam-rbac's generator (crates/rbac/src/generate.rs, module k8s).
package main

import (
	"bufio"
	"context"
	"encoding/json"
	"flag"
	"fmt"
	"os"
	"runtime"
	"runtime/debug"
	"strings"
	"testing"
	"time"

	rbacv1 "k8s.io/api/rbac/v1"
	"k8s.io/apiserver/pkg/authentication/user"
	"k8s.io/apiserver/pkg/authorization/authorizer"
	rbaclisters "k8s.io/client-go/listers/rbac/v1"
	"k8s.io/client-go/tools/cache"
	"k8s.io/kubernetes/plugin/pkg/auth/authorizer/rbac"
)

// request mirrors ksiam_rbac::generate::k8s::AccessRequest.
type request struct {
	User            string   `json:"user"`
	Groups          []string `json:"groups"`
	Verb            string   `json:"verb"`
	Namespace       string   `json:"namespace"`
	APIGroup        string   `json:"apiGroup"`
	Resource        string   `json:"resource"`
	Subresource     string   `json:"subresource"`
	Name            string   `json:"name"`
	ResourceRequest bool     `json:"resourceRequest"`
	Path            string   `json:"path"`
}

// benchCase is one named request with its expected outcome.
type benchCase struct {
	Name    string  `json:"name"`
	Request request `json:"request"`
	Allowed bool    `json:"allowed"`
}

func (r request) attributes() authorizer.AttributesRecord {
	return authorizer.AttributesRecord{
		User:            &user.DefaultInfo{Name: r.User, Groups: r.Groups},
		Verb:            r.Verb,
		Namespace:       r.Namespace,
		APIGroup:        r.APIGroup,
		APIVersion:      "v1",
		Resource:        r.Resource,
		Subresource:     r.Subresource,
		Name:            r.Name,
		ResourceRequest: r.ResourceRequest,
		Path:            r.Path,
	}
}

func newIndexer() cache.Indexer {
	// What a shared informer's store is: keyed by namespace/name, indexed by namespace.
	return cache.NewIndexer(cache.MetaNamespaceKeyFunc, cache.Indexers{cache.NamespaceIndex: cache.MetaNamespaceIndexFunc})
}

// load builds the authorizer the way kube-apiserver wires it (pkg/kubeapiserver/authorizer), over indexers
// filled from the policy file instead of watches.
func load(path string) (*rbac.RBACAuthorizer, int, error) {
	data, err := os.ReadFile(path)
	if err != nil {
		return nil, 0, err
	}
	var list struct {
		Items []json.RawMessage `json:"items"`
	}
	if err := json.Unmarshal(data, &list); err != nil || list.Items == nil {
		if err := json.Unmarshal(data, &list.Items); err != nil {
			return nil, 0, fmt.Errorf("%s: neither a List nor a JSON array: %w", path, err)
		}
	}
	roles, roleBindings, clusterRoles, clusterRoleBindings := newIndexer(), newIndexer(), newIndexer(), newIndexer()
	bindings := 0
	for i, raw := range list.Items {
		var head struct {
			Kind string `json:"kind"`
		}
		if err := json.Unmarshal(raw, &head); err != nil {
			return nil, 0, fmt.Errorf("item %d: %w", i, err)
		}
		var obj interface{}
		var store cache.Indexer
		switch head.Kind {
		case "Role":
			obj, store = &rbacv1.Role{}, roles
		case "RoleBinding":
			obj, store = &rbacv1.RoleBinding{}, roleBindings
			bindings++
		case "ClusterRole":
			obj, store = &rbacv1.ClusterRole{}, clusterRoles
		case "ClusterRoleBinding":
			obj, store = &rbacv1.ClusterRoleBinding{}, clusterRoleBindings
			bindings++
		default:
			continue
		}
		if err := json.Unmarshal(raw, obj); err != nil {
			return nil, 0, fmt.Errorf("item %d (%s): %w", i, head.Kind, err)
		}
		if err := store.Add(obj); err != nil {
			return nil, 0, err
		}
	}
	authz := rbac.New(
		&rbac.RoleGetter{Lister: rbaclisters.NewRoleLister(roles)},
		&rbac.RoleBindingLister{Lister: rbaclisters.NewRoleBindingLister(roleBindings)},
		&rbac.ClusterRoleGetter{Lister: rbaclisters.NewClusterRoleLister(clusterRoles)},
		&rbac.ClusterRoleBindingLister{Lister: rbaclisters.NewClusterRoleBindingLister(clusterRoleBindings)},
	)
	return authz, bindings, nil
}

func readJSON(path string, into interface{}) error {
	data, err := os.ReadFile(path)
	if err != nil {
		return err
	}
	return json.Unmarshal(data, into)
}

func allowed(authz *rbac.RBACAuthorizer, attrs authorizer.Attributes) bool {
	d, _, _ := authz.Authorize(context.Background(), attrs)
	return d == authorizer.DecisionAllow
}

func versions() string {
	parts := []string{runtime.Version()}
	if info, ok := debug.ReadBuildInfo(); ok {
		for _, d := range info.Deps {
			if d.Path == "k8s.io/kubernetes" || d.Path == "k8s.io/client-go" || d.Path == "k8s.io/apiserver" {
				v := d.Version
				if d.Replace != nil {
					v = d.Replace.Version
				}
				parts = append(parts, d.Path+"@"+v)
			}
		}
	}
	return strings.Join(parts, " ")
}

func main() {
	testing.Init()
	policy := flag.String("policy", "", "policy file (List of rbac.authorization.k8s.io/v1 objects)")
	requests := flag.String("requests", "", "decide mode: JSON array of requests")
	cases := flag.String("cases", "", "bench mode: JSON array of {name, request, allowed}")
	mode := flag.String("mode", "decide", "decide or bench")
	count := flag.Int("count", 5, "bench mode: runs of testing.Benchmark per case")
	benchtime := flag.Duration("benchtime", time.Second, "bench mode: target time of one run")
	version := flag.Bool("version", false, "print the versions of Go and the peer modules")
	flag.Parse()
	if *version {
		fmt.Println(versions())
		return
	}
	if err := run(*policy, *requests, *cases, *mode, *count, *benchtime); err != nil {
		fmt.Fprintln(os.Stderr, "k8s-rbac:", err)
		os.Exit(1)
	}
}

func run(policy, requests, cases, mode string, count int, benchtime time.Duration) error {
	start := time.Now()
	authz, bindings, err := load(policy)
	if err != nil {
		return err
	}
	fmt.Fprintf(os.Stderr, "k8s-rbac: loaded %d bindings from %s in %s\n", bindings, policy, time.Since(start).Round(time.Millisecond))
	switch mode {
	case "decide":
		var reqs []request
		if err := readJSON(requests, &reqs); err != nil {
			return err
		}
		out := bufio.NewWriter(os.Stdout)
		defer out.Flush()
		for _, r := range reqs {
			if allowed(authz, r.attributes()) {
				fmt.Fprintln(out, "allow")
			} else {
				fmt.Fprintln(out, "deny")
			}
		}
		return nil
	case "bench":
		var cs []benchCase
		if err := readJSON(cases, &cs); err != nil {
			return err
		}
		if err := flag.Set("test.benchtime", benchtime.String()); err != nil {
			return err
		}
		for _, c := range cs {
			attrs := c.Request.attributes()
			if got := allowed(authz, attrs); got != c.Allowed {
				return fmt.Errorf("case %s: allowed=%v, expected %v", c.Name, got, c.Allowed)
			}
			for i := 0; i < count; i++ {
				res := testing.Benchmark(func(b *testing.B) {
					b.ReportAllocs()
					for j := 0; j < b.N; j++ {
						allowed(authz, attrs)
					}
				})
				fmt.Printf("BENCH peer=k8s-rbac case=%s bindings=%d run=%d n=%d ns_per_op=%.1f allocs_per_op=%d bytes_per_op=%d\n",
					c.Name, bindings, i, res.N, float64(res.T.Nanoseconds())/float64(res.N), res.AllocsPerOp(), res.AllocedBytesPerOp())
			}
		}
		return nil
	default:
		return fmt.Errorf("unknown mode %q", mode)
	}
}
