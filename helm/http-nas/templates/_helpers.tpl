{{/*
Chart name, truncated to 63 characters (the DNS label limit).
*/}}
{{- define "http-nas.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/*
Fully qualified app name: the standard helper. A release name that already contains the chart
name is used as is, so release "http-nas" gives "http-nas" (the Service name 1.x clients call).
*/}}
{{- define "http-nas.fullname" -}}
{{- if .Values.fullnameOverride }}
{{- .Values.fullnameOverride | trunc 63 | trimSuffix "-" }}
{{- else }}
{{- $name := default .Chart.Name .Values.nameOverride }}
{{- if contains $name .Release.Name }}
{{- .Release.Name | trunc 63 | trimSuffix "-" }}
{{- else }}
{{- printf "%s-%s" .Release.Name $name | trunc 63 | trimSuffix "-" }}
{{- end }}
{{- end }}
{{- end }}

{{/*
Chart name and version, for the helm.sh/chart label.
*/}}
{{- define "http-nas.chart" -}}
{{- printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/*
Common labels.
*/}}
{{- define "http-nas.labels" -}}
helm.sh/chart: {{ include "http-nas.chart" . }}
{{ include "http-nas.selectorLabels" . }}
app.kubernetes.io/version: {{ toString (default .Chart.AppVersion .Values.image.tag) | replace "+" "_" | trunc 63 | trimSuffix "-" | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
{{- end }}

{{/*
Selector labels (immutable on a Deployment: never add to these).
*/}}
{{- define "http-nas.selectorLabels" -}}
app.kubernetes.io/name: {{ include "http-nas.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end }}

{{/*
ServiceAccount name.
*/}}
{{- define "http-nas.serviceAccountName" -}}
{{- if .Values.serviceAccount.create }}
{{- default (include "http-nas.fullname" .) .Values.serviceAccount.name }}
{{- else }}
{{- default "default" .Values.serviceAccount.name }}
{{- end }}
{{- end }}

{{/*
Image reference: <registry>/<repository>:<tag> or <registry>/<repository>@<digest>.
*/}}
{{- define "http-nas.image" -}}
{{- $repo := .Values.image.repository }}
{{- with .Values.image.registry }}
{{- $repo = printf "%s/%s" (trimSuffix "/" .) $repo }}
{{- end }}
{{- if .Values.image.digest }}
{{- printf "%s@%s" $repo .Values.image.digest }}
{{- else }}
{{- $tag := toString (default .Chart.AppVersion .Values.image.tag) }}
{{- printf "%s:%s%s" $repo $tag (ternary "-debug" "" (.Values.image.debug | default false)) }}
{{- end }}
{{- end }}

{{/*
Name of the PersistentVolumeClaim the pods mount.
*/}}
{{- define "http-nas.claimName" -}}
{{- if .Values.pvc.existingClaim }}
{{- .Values.pvc.existingClaim }}
{{- else if .Values.pvc.claimName }}
{{- .Values.pvc.claimName }}
{{- else if eq (include "http-nas.legacyClaim" .) "true" }}
{{- "http-nas-storage" }}
{{- else }}
{{- printf "%s-storage" (include "http-nas.fullname" .) | trunc 63 | trimSuffix "-" }}
{{- end }}
{{- end }}

{{/*
"true" when this release already owns a claim named http-nas-storage: the name the 1.x chart
gave its claim whatever the release name. An upgrade of such a release keeps that claim (and
its data) instead of replacing it with "<fullname>-storage". Looked up in the cluster at
install/upgrade time; offline (helm template) nothing is found.
*/}}
{{- define "http-nas.legacyClaim" -}}
{{- $pvc := lookup "v1" "PersistentVolumeClaim" .Release.Namespace "http-nas-storage" }}
{{- if and $pvc (eq (dig "metadata" "annotations" "meta.helm.sh/release-name" "" $pvc) .Release.Name) }}true{{ end }}
{{- end }}

{{/*
The volume's access mode (default ReadWriteOnce).
*/}}
{{- define "http-nas.accessMode" -}}
{{- default "ReadWriteOnce" .Values.pvc.accessMode }}
{{- end }}

{{/*
"true" when the volume can be mounted by several pods on several nodes.
*/}}
{{- define "http-nas.sharedVolume" -}}
{{- if eq (include "http-nas.accessMode" .) "ReadWriteMany" }}true{{ end }}
{{- end }}

{{/*
Node selector: top-level nodeSelector over global.nodeSelector (which 1.x read).
*/}}
{{- define "http-nas.nodeSelector" -}}
{{- $global := dict }}
{{- with .Values.global }}{{ $global = .nodeSelector | default dict }}{{ end }}
{{- $merged := merge (deepCopy (.Values.nodeSelector | default dict)) (deepCopy $global) }}
{{- if $merged }}
{{- toYaml $merged }}
{{- end }}
{{- end }}

{{/*
terminationGracePeriodSeconds: the optional preStop sleep, then the drain after SIGTERM
(server.shutdownTimeoutSeconds), plus 5 s of margin for the process to exit.
*/}}
{{- define "http-nas.terminationGracePeriodSeconds" -}}
{{- add (int .Values.server.shutdownTimeoutSeconds) (int (.Values.server.preStopSleepSeconds | default 0)) 5 }}
{{- end }}

{{/*
Refuse values that cannot work, with the reason and the way out. Included by every manifest
that depends on them, so `helm install`, `helm template` and `helm lint` all stop here.
*/}}
{{- define "http-nas.validate" -}}
{{- $mode := include "http-nas.accessMode" . }}
{{- $modes := list "ReadWriteOnce" "ReadWriteOncePod" "ReadWriteMany" }}
{{- if not (has $mode $modes) }}
{{- fail (printf "\n\nhttp-nas: pvc.accessMode %q is not supported. Use ReadWriteOnce (one node, replicaCount 1), ReadWriteOncePod (one pod, replicaCount 1) or ReadWriteMany (shared file system, any replicaCount). ReadOnlyMany cannot work: the service writes to the volume." $mode) }}
{{- end }}
{{- $shared := include "http-nas.sharedVolume" . }}
{{- if and (not $shared) (gt (int .Values.replicaCount) 1) }}
{{- fail (printf "\n\nhttp-nas: replicaCount=%d needs a ReadWriteMany volume, but pvc.accessMode is %s.\nA %s volume attaches to a single node (ReadWriteOncePod: a single pod), so every replica beyond the first would hang in ContainerCreating (Multi-Attach error) or, on the same node, share a volume its driver does not promise to share safely.\nEither keep replicaCount=1 (one pod easily serves many jobs; raise server.workers instead), or use a StorageClass that provides ReadWriteMany with flock(2) across clients, atomic renames and close-to-open consistency - e.g. AWS EFS (efs.csi.aws.com), CephFS, GCP Filestore or NFS v4.1+ mounted with actimeo=0,lookupcache=none; not Azure Files (SMB), whose locks are local to each client (docs/operations.md, \"Several replicas\") - and set pvc.accessMode=ReadWriteMany (with pvc.storageClass=<that class>, or pvc.existingClaim=<an RWX claim>)." (int .Values.replicaCount) $mode $mode) }}
{{- end }}
{{- if and (not $shared) .Values.autoscaling.enabled }}
{{- fail (printf "\n\nhttp-nas: autoscaling.enabled=true needs a ReadWriteMany volume, but pvc.accessMode is %s.\nThe autoscaler would add pods that can never attach a %s volume (Multi-Attach error). Turn autoscaling off (one pod serves many jobs; raise server.workers instead), or use a ReadWriteMany StorageClass with flock(2) across clients - AWS EFS, CephFS, GCP Filestore, NFS v4.1+ (actimeo=0,lookupcache=none); not Azure Files (SMB), whose locks are local to each client - and set pvc.accessMode=ReadWriteMany." $mode $mode) }}
{{- end }}
{{- if and .Values.autoscaling.enabled (gt (int .Values.autoscaling.minReplicas) (int .Values.autoscaling.maxReplicas)) }}
{{- fail (printf "\n\nhttp-nas: autoscaling.minReplicas (%d) is larger than autoscaling.maxReplicas (%d)." (int .Values.autoscaling.minReplicas) (int .Values.autoscaling.maxReplicas)) }}
{{- end }}
{{- if and .Values.autoscaling.enabled (not .Values.autoscaling.targetCPUUtilizationPercentage) (not .Values.autoscaling.targetMemoryUtilizationPercentage) }}
{{- fail "\n\nhttp-nas: autoscaling.enabled=true needs autoscaling.targetCPUUtilizationPercentage or autoscaling.targetMemoryUtilizationPercentage." }}
{{- end }}
{{- if not (hasPrefix "/" (toString .Values.storagePath)) }}
{{- fail (printf "\n\nhttp-nas: storagePath must be an absolute path inside the container (e.g. /mnt/storage), got %q." (toString .Values.storagePath)) }}
{{- end }}
{{- if lt (int .Values.server.shutdownTimeoutSeconds) 1 }}
{{- fail "\n\nhttp-nas: server.shutdownTimeoutSeconds must be at least 1." }}
{{- end }}
{{- if and .Values.auth.existingSecret (not .Values.auth.tokenKey) }}
{{- fail "\n\nhttp-nas: auth.existingSecret is set but auth.tokenKey is empty: name the Secret's key that holds the read-write token (default \"token\")." }}
{{- end }}
{{- end }}

{{/*
HTTP_NAS_ALLOWED_HOSTS: allowedHosts (each entry a template, so the default can name the
Service), then the Ingress hosts when the Ingress is on; comma-separated, duplicates removed.
Empty when allowedHosts is empty.
*/}}
{{- define "http-nas.allowedHosts" -}}
{{- $hosts := list }}
{{- range .Values.allowedHosts }}
{{- $hosts = append $hosts (tpl (toString .) $) }}
{{- end }}
{{- if and $hosts .Values.ingress.enabled }}
{{- range .Values.ingress.hosts }}
{{- with .host }}{{ $hosts = append $hosts . }}{{ end }}
{{- end }}
{{- end }}
{{- join "," (uniq $hosts) }}
{{- end }}
