#!/usr/bin/env bash
# check-exports.sh LIB HEADER
#
# Compares the functions HEADER declares with the vtrn_* symbols LIB exports, in both directions:
#   - every function declared in the header must be exported (else C programs fail to link);
#   - every exported vtrn_* symbol must be declared (else it is an undocumented API);
#   - nothing else may be exported but Swift symbols ($s...) and the linker's own
#     (_edata, _end, __bss_start, _init, _fini), so C shim internals never leak.
# Prints what is missing or extra; exits 0 when they agree, 1 when they differ, 2 on bad usage.
#
# Header parsing relies on vtrn.h's style: a function declaration starts at column 0 with its
# return type and ends with ");". Comments, preprocessor lines (with their continuations),
# typedefs, struct/enum bodies, extern "C" braces and static inline definitions are skipped.
set -euo pipefail

if [[ $# -ne 2 ]]; then
    echo "usage: $0 LIB HEADER" >&2
    exit 2
fi
lib=$1
header=$2
for file in "$lib" "$header"; do
    if [[ ! -r $file ]]; then
        echo "check-exports: cannot read $file" >&2
        exit 2
    fi
done

# The function names the header declares, one per line, sorted.
declared_functions() {
    awk '
        # Remove comments, carrying the state of a /* ... */ across lines.
        function strip_comments(line,    out, start, stop) {
            out = ""
            while (line != "") {
                if (in_comment) {
                    stop = index(line, "*/")
                    if (stop == 0) return out
                    line = substr(line, stop + 2)
                    in_comment = 0
                } else {
                    start = index(line, "/*")
                    slashes = index(line, "//")
                    if (slashes > 0 && (start == 0 || slashes < start)) return out substr(line, 1, slashes - 1)
                    if (start == 0) return out line
                    out = out substr(line, 1, start - 1) " "
                    line = substr(line, start + 2)
                    in_comment = 1
                }
            }
            return out
        }
        {
            line = strip_comments($0)
            if (continued_macro) { continued_macro = (line ~ /\\[ \t]*$/); next }
            if (line ~ /^[ \t]*#/) { continued_macro = (line ~ /\\[ \t]*$/); next }
            if (collecting) {
                statement = statement " " line
            } else {
                # A declaration begins at column 0 with an identifier (its return type).
                if (line !~ /^[A-Za-z_]/) next
                if (line ~ /^(typedef|struct|enum|union|static)([^A-Za-z0-9_]|$)/) next
                if (line ~ /^extern[ \t]*"C"/) next
                statement = line
                collecting = 1
            }
            if (statement ~ /;/) {
                collecting = 0
                if (match(statement, /vtrn_[A-Za-z0-9_]*[ \t]*\(/)) {
                    name = substr(statement, RSTART, RLENGTH)
                    sub(/[ \t]*\($/, "", name)
                    print name
                }
            }
        }
        END {
            if (collecting) { print "check-exports: unterminated declaration: " statement > "/dev/stderr"; exit 1 }
        }
    ' "$header" | LC_ALL=C sort -u
}

# The dynamic symbols LIB defines, without version suffixes, sorted.
exported_symbols() {
    nm -D --defined-only "$lib" | awk 'NF >= 3 { name = $NF; sub(/@.*/, "", name); print name }' | LC_ALL=C sort -u
}

declared=$(declared_functions)
exported=$(exported_symbols)

if [[ -z $declared ]]; then
    echo "check-exports: found no function declarations in $header" >&2
    exit 1
fi

exported_vtrn=$(grep -E '^vtrn_' <<<"$exported" || true)
# Anything else that is neither Swift-mangled nor the linker's own is a leak.
leaked=$(grep -vE '^(vtrn_|_?\$s)' <<<"$exported" | grep -vxE '_edata|_end|__bss_start|_init|_fini' || true)

missing=$(LC_ALL=C comm -23 <(echo "$declared") <(echo "$exported_vtrn"))
extra=$(LC_ALL=C comm -13 <(echo "$declared") <(echo "$exported_vtrn"))

status=0
if [[ -n $missing ]]; then
    echo "check-exports: declared in $header but not exported by $lib:"
    sed 's/^/  /' <<<"$missing"
    status=1
fi
if [[ -n $extra ]]; then
    echo "check-exports: exported by $lib but not declared in $header:"
    sed 's/^/  /' <<<"$extra"
    status=1
fi
if [[ -n $leaked ]]; then
    echo "check-exports: $lib exports symbols that are neither vtrn_* nor Swift (\$s...):"
    sed 's/^/  /' <<<"$leaked"
    status=1
fi
if [[ $status -eq 0 ]]; then
    echo "check-exports: $(wc -l <<<"$declared") functions declared and exported, nothing else leaks"
fi
exit $status
