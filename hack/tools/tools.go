//go:build tools

// Package tools pins the binaries imagegate's end-to-end harness runs: kube-apiserver and etcd
// (the pair controller-runtime's envtest runs) and helm. hack/build-tools.sh builds them from
// this module into a cache outside the repository, keyed by a hash of go.mod and go.sum.
//
// The blank imports keep the main packages (and so their versions) in go.mod and go.sum; this
// file is never compiled (build tag "tools").
package tools

import (
	_ "go.etcd.io/etcd/server/v3"
	_ "helm.sh/helm/v3/cmd/helm"
	_ "k8s.io/kubernetes/cmd/kube-apiserver"
	_ "k8s.io/kubernetes/cmd/kube-controller-manager"
	_ "k8s.io/kubernetes/cmd/kube-proxy"
	_ "k8s.io/kubernetes/cmd/kube-scheduler"
	_ "k8s.io/kubernetes/cmd/kubeadm"
	_ "k8s.io/kubernetes/cmd/kubelet"
	_ "k8s.io/kubernetes/cmd/kubectl"
)
