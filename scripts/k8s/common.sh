# shellcheck shell=bash disable=SC2034 # used by the scripts that source it
# Shared by scripts/k8s-up and scripts/k8s-down: where the local cluster
# keeps its binaries (cached across runs), its state (removed by k8s-down)
# and its run files (pid files, sockets, the env file).
K8S_VERSION=${K8S_VERSION:-v1.37.2}
K8S_CACHE=${K8S_CACHE:-${COHORTSYNC_CACHE_DIR:-$HOME/.cache/cohortsync-worker}/k8s}
BIN=$K8S_CACHE/bin-$K8S_VERSION
# Certificates and kubeconfigs: kept across runs (regenerated when missing).
PKI=$K8S_CACHE/pki
STATE=${COHORTSYNC_K8S_STATE:-/var/lib/cohortsync-k8s}
RUN=${COHORTSYNC_K8S_RUN:-/run/cohortsync-k8s}
LOGS=$STATE/logs
CONTAINERD_SOCK=$RUN/containerd/containerd.sock
BRIDGE=cohortk8s0
NODE_IP=${COHORTSYNC_K8S_NODE_IP:-10.244.0.1}
POD_CIDR=${NODE_IP%.*}.0/24
NODE_NAME=cohortsync-node
API_PORT=${COHORTSYNC_K8S_API_PORT:-16443}
ETCD_PORT=12379
ETCD_PEER_PORT=12380
KCM_PORT=10257
SCHED_PORT=10259
KUBELET_PORT=10250
KUBELET_HEALTHZ_PORT=10248
PAUSE_IMAGE=localhost/cohortsync/pause:3.10
WORKER_IMAGE=${COHORTSYNC_K8S_IMAGE:-localhost/cohortsync-worker:k8s}
EMULATOR_IMAGE=${COHORTSYNC_K8S_EMULATOR_IMAGE:-localhost/cohortsync-emulator:k8s}

kubectl_() { "$BIN/kubectl" --kubeconfig "$PKI/admin.kubeconfig" "$@"; }
