package main

// Copied from benches/peers/k8s-rbac/main.go (keep the two in step): the policy file into client-go indexers
// wrapped by the rbac/v1 listers, as kube-apiserver wires its informers.

import (
	"encoding/json"
	"fmt"
	"os"

	rbacv1 "k8s.io/api/rbac/v1"
	rbaclisters "k8s.io/client-go/listers/rbac/v1"
	"k8s.io/client-go/tools/cache"
	"k8s.io/kubernetes/plugin/pkg/auth/authorizer/rbac"
)

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
