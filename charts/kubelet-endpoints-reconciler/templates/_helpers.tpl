{{- /*
The one name of every object. Fixed, not derived from the release name: the
reconciler owns the cluster's kubelet Service, so a second release must not
run a second CronJob writing the same objects. Cluster-scoped objects carry
this name too, so Helm itself refuses a second install anywhere in the cluster
(and the "single" check below says why first).
*/}}
{{- define "ker.name" -}}
kubelet-endpoints-reconciler
{{- end }}

{{- /* The labels a selector may use: they never change on upgrade. */}}
{{- define "ker.selectorLabels" -}}
app.kubernetes.io/name: {{ include "ker.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/component: reconciler
app.kubernetes.io/part-of: {{ include "ker.name" . }}
{{- end }}

{{- /* The standard labels, on every object. */}}
{{- define "ker.labels" -}}
{{ include "ker.selectorLabels" . }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" }}
{{- end }}

{{- /*
One reconciler per cluster: the ClusterRole of another release means another
CronJob already writes the kubelet objects. lookup is empty in helm template
and helm lint, so this only speaks on install and upgrade.
*/}}
{{- define "ker.single" -}}
{{- $existing := lookup "rbac.authorization.k8s.io/v1" "ClusterRole" "" (include "ker.name" .) }}
{{- if $existing }}
{{- $annotations := $existing.metadata.annotations | default dict }}
{{- $release := index $annotations "meta.helm.sh/release-name" | default "" }}
{{- $namespace := index $annotations "meta.helm.sh/release-namespace" | default "" }}
{{- if not (and (eq $release .Release.Name) (eq $namespace .Release.Namespace)) }}
{{- if $release }}
{{- fail (printf "kubelet-endpoints-reconciler is already installed in this cluster (ClusterRole %s, release %s in namespace %s): one reconciler per cluster; upgrade that release instead (helm upgrade %s -n %s)" (include "ker.name" .) $release $namespace $release $namespace) }}
{{- else }}
{{- fail (printf "kubelet-endpoints-reconciler is already installed in this cluster (ClusterRole %s, not by Helm: kubectl apply or kustomize): one reconciler per cluster; delete that install first (kubectl delete -f cronjob.yaml)" (include "ker.name" .)) }}
{{- end }}
{{- end }}
{{- end }}
{{- end }}

{{- /*
The reconciler's pod spec: the CronJob's runs and the helm test run are the
same program with the same ServiceAccount, environment and limits. Extra
arguments (the test's --dry-run) in "args".
*/}}
{{- define "ker.podSpec" -}}
{{- $ := .root -}}
serviceAccountName: {{ include "ker.name" $ }}
# The run talks to the API server with this token (in-cluster config).
automountServiceAccountToken: true
restartPolicy: Never
{{- with $.Values.imagePullSecrets }}
imagePullSecrets:
  {{- toYaml . | nindent 2 }}
{{- end }}
{{- with $.Values.nodeSelector }}
nodeSelector:
  {{- toYaml . | nindent 2 }}
{{- end }}
{{- with $.Values.tolerations }}
tolerations:
  {{- toYaml . | nindent 2 }}
{{- end }}
{{- with $.Values.affinity }}
affinity:
  {{- toYaml . | nindent 2 }}
{{- end }}
securityContext:
  runAsNonRoot: true
  runAsUser: 65534
  runAsGroup: 65534
  seccompProfile:
    type: RuntimeDefault
containers:
  - name: reconciler
    image: "{{ $.Values.image.repository }}:{{ $.Values.image.tag | default $.Chart.AppVersion }}"
    imagePullPolicy: {{ $.Values.image.pullPolicy }}
    {{- with .args }}
    args:
      {{- toYaml . | nindent 6 }}
    {{- end }}
    # Every flag has a KUBELET_ENDPOINTS_<FLAG> variable (README,
    # "Command line"); `args:` works too and wins over these.
    env:
      # The objects live in the pod's own namespace, so moving the
      # CronJob (and its Role) moves them too.
      - name: KUBELET_ENDPOINTS_NAMESPACE
        valueFrom:
          fieldRef:
            fieldPath: metadata.namespace
      {{- with $.Values.reconciler }}
      - name: KUBELET_ENDPOINTS_SERVICE_NAME
        value: {{ .serviceName | quote }}
      - name: KUBELET_ENDPOINTS_RESOURCES
        value: {{ .resources | quote }}
      - name: KUBELET_ENDPOINTS_TIMEOUT
        value: {{ .timeout | toString | quote }}
      - name: KUBELET_ENDPOINTS_LOG_FORMAT
        value: {{ .logFormat | quote }}
      {{- if .nodeSelector }}
      - name: KUBELET_ENDPOINTS_NODE_SELECTOR
        value: {{ .nodeSelector | quote }}
      {{- end }}
      {{- if .addressType }}
      - name: KUBELET_ENDPOINTS_ADDRESS_TYPE
        value: {{ .addressType | quote }}
      {{- end }}
      {{- if .maxEndpointsPerSlice }}
      - name: KUBELET_ENDPOINTS_MAX_ENDPOINTS_PER_SLICE
        value: {{ .maxEndpointsPerSlice | toString | quote }}
      {{- end }}
      {{- if .fieldManager }}
      - name: KUBELET_ENDPOINTS_FIELD_MANAGER
        value: {{ .fieldManager | quote }}
      {{- end }}
      {{- if .logLevel }}
      - name: KUBELET_ENDPOINTS_LOG_LEVEL
        value: {{ .logLevel | quote }}
      {{- end }}
      {{- range $flag, $var := dict "httpMetrics" "HTTP_METRICS" "takeOver" "TAKE_OVER" "allowEmpty" "ALLOW_EMPTY" "dryRun" "DRY_RUN" }}
      {{- if index $.Values.reconciler $flag }}
      - name: KUBELET_ENDPOINTS_{{ $var }}
        value: "true"
      {{- end }}
      {{- end }}
      {{- with .extraEnv }}
      {{- toYaml . | nindent 6 }}
      {{- end }}
      {{- end }}
      # Also available: KUBELET_ENDPOINTS_NODE_SELECTOR,
      # KUBELET_ENDPOINTS_ADDRESS_TYPE, KUBELET_ENDPOINTS_HTTP_METRICS,
      # KUBELET_ENDPOINTS_TAKE_OVER, KUBELET_ENDPOINTS_MAX_ENDPOINTS_PER_SLICE,
      # KUBELET_ENDPOINTS_DRY_RUN (the chart's reconciler.* values).
    # Sized from `make bench` (peak RSS and CPU per cluster size:
    # docs/performance.md): the memory limit leaves about 2x headroom over
    # the largest peak, and a 15,000-node run at the CPU limit ends far
    # inside its timeout.
    resources:
      {{- toYaml $.Values.resources | nindent 6 }}
    # On failure the run writes "exit N: reason" here; the kubelet
    # mounts the file (writable even with a read-only root) and shows
    # it in `kubectl describe pod`. Without it, the log's tail.
    terminationMessagePath: /dev/termination-log
    terminationMessagePolicy: FallbackToLogsOnError
    securityContext:
      allowPrivilegeEscalation: false
      readOnlyRootFilesystem: true
      privileged: false
      capabilities:
        drop: [ALL]
    volumeMounts:
      # The kubernetes client writes certificates from a kubeconfig's
      # inline data to temporary files; in-cluster it writes none.
      - name: tmp
        mountPath: /tmp
volumes:
  - name: tmp
    emptyDir:
      sizeLimit: 16Mi
{{- end }}

{{- /*
What the schema cannot say: the bounds of a timeout given as text (--set
reconciler.timeout=0.5 is a string), and the Job's deadline, which must leave
the run its whole --timeout, or every slow run is killed mid-write.
*/}}
{{- define "ker.checks" -}}
{{- $timeout := float64 .Values.reconciler.timeout }}
{{- if or (le $timeout 0.0) (gt $timeout 3600.0) }}
{{- fail (printf "reconciler.timeout %v: must be more than 0 and at most 3600 seconds" .Values.reconciler.timeout) }}
{{- end }}
{{- if le (float64 .Values.activeDeadlineSeconds) $timeout }}
{{- fail (printf "activeDeadlineSeconds %v must be more than reconciler.timeout %v (the run's own deadline), plus pod start-up: the Job would kill a run before it times out" .Values.activeDeadlineSeconds .Values.reconciler.timeout) }}
{{- end }}
{{- end }}
