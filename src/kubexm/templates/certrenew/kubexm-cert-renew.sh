#!/bin/bash
# kubexm-cert-renew: renew this node's certificates that expire within RENEW_BEFORE_DAYS days.
# Installed by kubexm (spec.pki.autoRenew), run by kubexm-cert-renew.timer; everything it says goes to the
# journal (journalctl -u kubexm-cert-renew), with syslog priorities: <3> error, <4> warning, <5> renewed.
# No value is written into this file: its parameters come from /etc/kubexm/cert-renew.env.
#
# What it renews, and why this way:
# - On a control-plane node, kubeadm's leaves and kubeconfigs, with `kubeadm certs renew NAME`: kubeadm takes
#   the subject and SANs from the certificate in place (kubexm's, with the names from the cluster file) and
#   signs with the CA key kubexm placed in /etc/kubernetes/pki. The static pods that read a renewed file are
#   restarted (manifest moved out and back), etcd before kube-apiserver before the others.
# - A certificate whose CA key is not on this node is not renewed here: kubexm keeps the CA key of its own
#   etcd on the deploy machine, and etcd members must restart one at a time with quorum checked, which
#   `kubexm certs renew` does. The script logs an error naming the file and that fix and exits 1, so the
#   service shows as failed (systemctl --failed) days before the certificate expires.
# - kubelet rotates its own client certificate; an expiring one means that rotation fails: a warning.
# The local copies on the deploy machine are renewed by kubexm itself, on the same threshold.
set -u

days="${RENEW_BEFORE_DAYS:-30}"
case "$days" in
    '' | *[!0-9]*) echo "<3>RENEW_BEFORE_DAYS must be a whole number of days, not '$days'"; exit 2 ;;
esac
# KUBEXM_CERT_ROOT: a directory standing for / (tests run the script on a copy of the layout).
root="${KUBEXM_CERT_ROOT:-}"
ready_timeout="${KUBEXM_READY_TIMEOUT:-180}"
k8s="$root/etc/kubernetes"
pki="$k8s/pki"
window=$((days * 86400))
status=0
restart=" "
renewed=0

# expires FILE: 0 when the PEM certificate read from FILE ("-": stdin) ends within the window.
expires() {
    if [ "$1" = - ]; then
        ! openssl x509 -noout -checkend "$window" >/dev/null 2>&1
    else
        ! openssl x509 -noout -checkend "$window" -in "$1" >/dev/null 2>&1
    fi
}

end_date() {
    openssl x509 -noout -enddate "$@" 2>/dev/null | cut -d= -f2
}

# renew NAME WHAT CA COMPONENT: kubeadm renews NAME when the CA key is here; else say who can.
renew() {
    name=$1 what=$2 ca=$3 component=$4
    if [ ! -f "$pki/$ca.key" ]; then
        echo "<3>$what expires within $days days and its CA key $pki/$ca.key is not on this node: run \`kubexm certs renew\` from the deploy machine"
        status=1
        return
    fi
    if kubeadm certs renew "$name"; then
        echo "<5>renewed $name ($what)"
        renewed=$((renewed + 1))
        if [ "$component" != - ]; then
            restart="$restart$component "
        fi
    else
        echo "<3>kubeadm certs renew $name failed; see the lines above"
        status=1
    fi
}

# leaf NAME FILE CA COMPONENT
leaf() {
    file="$pki/$2"
    [ -f "$file" ] || return 0
    if ! openssl x509 -noout -in "$file" >/dev/null 2>&1; then
        echo "<3>$file is not a readable certificate"
        status=1
        return
    fi
    if expires "$file"; then
        echo "<4>$file expires $(end_date -in "$file")"
        renew "$1" "$file" "$3" "$4"
    fi
}

# kubeconfig NAME COMPONENT: the client certificate embedded in /etc/kubernetes/NAME.
kubeconfig() {
    file="$k8s/$1"
    [ -f "$file" ] || return 0
    pem=$(sed -n 's/^[[:space:]]*client-certificate-data:[[:space:]]*//p' "$file" | head -n 1 | base64 -d 2>/dev/null)
    [ -n "$pem" ] || return 0 # a certificate in a file of its own (kubelet.conf): not kubeadm's to renew
    if printf '%s\n' "$pem" | expires -; then
        echo "<4>the client certificate in $file expires $(printf '%s\n' "$pem" | end_date)"
        renew "$1" "$file" ca "$2"
    fi
}

restart_static_pod() {
    manifest="$k8s/manifests/$1.yaml"
    parked="$k8s/$1.yaml.kubexm-renew"
    [ -f "$manifest" ] || return 0
    echo "<5>restarting $1"
    mv "$manifest" "$parked" || { status=1; return; }
    i=0
    while [ "$i" -lt 60 ] && crictl ps -q --name "^$1\$" 2>/dev/null | grep -q .; do
        sleep 1
        i=$((i + 1))
    done
    mv "$parked" "$manifest" || { echo "<3>could not put $manifest back (it is at $parked)"; status=1; return; }
    if [ "$1" = kube-apiserver ]; then
        i=0
        until curl -ksf --max-time 5 https://127.0.0.1:6443/readyz >/dev/null 2>&1; do
            i=$((i + 5))
            if [ "$i" -gt "$ready_timeout" ]; then
                echo "<3>kube-apiserver does not answer ${ready_timeout}s after its restart; see journalctl -u kubelet"
                status=1
                return
            fi
            sleep 5
        done
    fi
}

leaf apiserver apiserver.crt ca kube-apiserver
leaf apiserver-kubelet-client apiserver-kubelet-client.crt ca kube-apiserver
leaf front-proxy-client front-proxy-client.crt front-proxy-ca kube-apiserver
leaf apiserver-etcd-client apiserver-etcd-client.crt etcd/ca kube-apiserver
leaf etcd-server etcd/server.crt etcd/ca etcd
leaf etcd-peer etcd/peer.crt etcd/ca etcd
leaf etcd-healthcheck-client etcd/healthcheck-client.crt etcd/ca -
kubeconfig admin.conf -
kubeconfig super-admin.conf -
kubeconfig controller-manager.conf kube-controller-manager
kubeconfig scheduler.conf kube-scheduler

kubelet_client="$root/var/lib/kubelet/pki/kubelet-client-current.pem"
if [ -f "$kubelet_client" ] && expires "$kubelet_client"; then
    echo "<4>kubelet's client certificate expires $(end_date -in "$kubelet_client"): kubelet rotates it itself, so its rotation fails; see journalctl -u kubelet"
fi

for component in etcd kube-apiserver kube-controller-manager kube-scheduler; do
    case "$restart" in
        *" $component "*) restart_static_pod "$component" ;;
    esac
done

if [ "$renewed" -eq 0 ] && [ "$status" -eq 0 ]; then
    echo "no certificate expires within $days days"
fi
exit "$status"
