#!/usr/bin/env perl
# nix-ssh-cache-fetch (production): substitute the closure of store paths from the staging cache
# in one SSH session, instead of Nix's two round trips per path.
#
# Usage: nix-ssh-cache-fetch [--from ssh://USER@HOST] [--work-dir DIR] [--no-fallback] [--quiet]
#                            [--json] [--compress] PATH...
#   PATH: a store path, or a store derivation (`.drv`: its outputs are fetched).
#   --from: the staging cache; default: the first ssh:// substituter of this host's Nix
#     configuration (`nix show-config`), the one nix-ssh-cache configures.
#   --work-dir: where the fetched NARs wait until Nix adds them (uncompressed: room for the
#     closure); default: $NIX_SSH_CACHE_FETCH_DIR, else /var/tmp. Removed afterwards.
#   --no-fallback: fail when the one-session path fails, instead of running
#     `nix-store --realise` through the configured substituters.
#   --compress: compress the session (ssh's zlib, `-o Compression=yes`; the same as `compress=true`
#     in the --from URL). Pays on slow links and compressible closures, costs on fast links
#     (see docs/performance.md); the fallback's nix-store uses the substituters as configured.
#   --json: print one JSON object on stdout at the end: {"closure":N,"fetched":M,"bytes":B,
#     "seconds":S,"fallback":false|true,"reason":"why the fast path failed"} (messages stay on
#     stderr).
#
# How: over `nix-store --serve` (the protocol of ssh:// substituters; staging's serve user is
# confined to it by sshd's ForceCommand, nothing changes there) it asks for the closure of PATH
# (one round trip), then asks for the path infos of the paths this host lacks and their NARs in
# one pipelined batch (one round trip plus the bytes). The NARs and infos (with staging's
# signatures) become a temporary file:// binary cache, from which `nix copy` adds them. Runs as
# root, like the deploy it prepares (root's ssh configuration holds the pinned host key and the
# key staging authorised), with Perl's core modules (Debian's perl-base; NixOS's default packages).
# Exit status: 0 when every PATH is valid on this host afterwards.
#
# Staging is not trusted. Every byte it sends is checked before use: each store path, reference
# and deriver against the store-path syntax of this host's store directory (and references
# against the closure), hashes, CA and signatures against their formats, every count and string
# length against a bound before anything is read or allocated, the NAR sizes against the free
# space of the work directory; nothing staging sent reaches a command line but checked store
# paths, after `--`. Signatures are checked whatever this host's `require-sigs` says: the
# fetched infos must carry a valid signature by a key in this host's trusted-public-keys (`nix
# store verify`, which does not read require-sigs) before `nix copy --option require-sigs true`
# adds them (Nix checks the NAR hashes); the fallback runs with `--option require-sigs true` too.
use strict;
use warnings;
use File::Temp qw(tempdir);
use IPC::Open2 qw(open2);
use POSIX ();

my $ME = "nix-ssh-cache-fetch";
my $SERVE_MAGIC_1 = 0x390c9deb;
my $SERVE_MAGIC_2 = 0x5452eecb;
my $CLIENT_VERSION = 0x206;    # 2.6: path infos carry NarHash, CA and signatures (from 2.4)
my ($CMD_QUERY_PATH_INFOS, $CMD_DUMP_STORE_PATH, $CMD_QUERY_CLOSURE) = (2, 3, 7);
# Bounds on what staging may send (checked before reading or allocating): a NixOS system closure
# is a few thousand paths; a store path name is at most 211 characters (Nix's StorePath).
my $MAX_PATHS = 100_000;
my $MAX_NAME = 211;
my $MAX_SIGS = 32;
my $MAX_SIG_LENGTH = 256;
my $MAX_HASH_LENGTH = 128;
my $MAX_CA_LENGTH = 256;
# The NARs must leave this much of the work directory's file system free: min(1/10, 1 GiB).
my $MAX_RESERVE = 1 << 30;

my ($from, $fallback, $quiet, $json, $compress) = (undef, 1, 0, 0, 0);
my %report = (closure => 0, fetched => 0, bytes => 0, fallback => 0, reason => '');
my $t0 = time;
# Who answers, for messages: "staging (ssh://nix-ssh@stage.test)".
my $staging = 'staging';
# Our children (ssh, the request writer), stopped when the fast path fails half-way; the
# filter of staging's messages (start_stderr_filter).
my %children;
my $stderr_filter;
my $work = $ENV{NIX_SSH_CACHE_FETCH_DIR} // '/var/tmp';
my @args;
while (@ARGV) {
    my $a = shift @ARGV;
    if ($a eq '--from') { $from = shift @ARGV // usage("--from needs a URL") }
    elsif ($a =~ /^--from=(.*)$/) { $from = $1 }
    elsif ($a eq '--work-dir') { $work = shift @ARGV // usage("--work-dir needs a directory") }
    elsif ($a =~ /^--work-dir=(.*)$/) { $work = $1 }
    elsif ($a eq '--no-fallback') { $fallback = 0 }
    elsif ($a eq '--quiet') { $quiet = 1 }
    elsif ($a eq '--json') { $json = 1 }
    elsif ($a eq '--compress') { $compress = 1 }
    elsif ($a eq '--help' || $a eq '-h') { print usage_text(); exit 0 }
    elsif ($a eq '--') { push @args, @ARGV; last }
    elsif ($a =~ /^-/) { usage("unknown option $a") }
    else { push @args, $a }
}
usage("no store path given") unless @args;
# Interrupted: exit through Perl's END handling, so that the work directory is removed.
$SIG{INT} = $SIG{TERM} = $SIG{HUP} = sub { exit 130 };

sub usage_text {
    "usage: $ME [--from ssh://USER\@HOST] [--work-dir DIR] [--no-fallback] [--quiet] [--json]"
        . " [--compress] PATH...\n";
}
sub usage { print STDERR "$ME: $_[0]\n", usage_text(); exit 2 }
sub say_ { print STDERR "$ME: @_\n" unless $quiet }

# This host's store directory, and the syntax of a store path in it (Nix's StorePath): the
# directory, '/', 32 characters of Nix's base32, '-', a name of 1 to 211 characters of
# [A-Za-z0-9+-._?=] that does not start with '.'.
my $store_dir = $ENV{NIX_STORE_DIR} // '/nix/store';
die "$ME: the store directory '" . printable($store_dir) . "' (NIX_STORE_DIR) is not a plain absolute path\n"
    unless $store_dir =~ m{\A(?:/[A-Za-z0-9+_.-]+)+\z};
my $STORE_PATH = qr{\A\Q$store_dir\E/[0-9a-df-np-sv-z]{32}-(?!\.)[A-Za-z0-9+\-._?=]{1,$MAX_NAME}\z};
my $MAX_PATH_LENGTH = length($store_dir) + 1 + 32 + 1 + $MAX_NAME;

# The store paths to make valid: a .drv stands for its outputs.
my @roots;
for my $p (@args) {
    die "$ME: '" . printable($p) . "' is not a store path in $store_dir\n" unless is_store_path($p);
    if ($p =~ /\.drv\z/) {
        for my $out (lines('nix-store', '--query', '--outputs', '--', $p)) {
            die "$ME: nix-store --query --outputs $p printed '" . printable($out) . "', not a store path\n"
                unless is_store_path($out);
            push @roots, $out;
        }
    }
    else { push @roots, $p }
}

my ($ok, $why) = (0, '');
if ($> != 0) {
    $why = "not root: run it as root (root's ssh configuration and key reach the cache)";
} else {
    $ok = eval { fast(); 1 };
    $why = $@ unless $ok;
    chomp $why;
    stop_children();
}
finish(0) if $ok;
unless ($fallback) { print STDERR "$ME: the one-session fetch failed: $why\n"; exit 1 }
say_("the one-session fetch failed: $why; falling back to nix-store --realise through the configured substituters");
@report{qw(fallback reason)} = (1, $why);
# nix-store prints the realised paths on stdout: keep stdout for the --json report. Its output
# (with its ssh's, staging's words) goes through the filter.
open(my $stdout, '>&', \*STDOUT) or die "$ME: dup stdout: $!\n";
open(my $stderr, '>&', \*STDERR) or die "$ME: dup stderr: $!\n";
my $filter_in = start_stderr_filter('nix-store', 1 << 20);
open(STDERR, '>&', $filter_in) or die "$ME: dup stderr: $!\n";
open(STDOUT, '>&', $filter_in) or die "$ME: dup stdout: $!\n";
close $filter_in;
# Nix's substituters check signatures only with require-sigs: force it, whatever nix.conf says.
my $status = system('nix-store', '--option', 'require-sigs', 'true', '--realise', '--', @roots);
open(STDOUT, '>&', $stdout) or die "$ME: restore stdout: $!\n";
open(STDERR, '>&', $stderr) or die "$ME: restore stderr: $!\n";
STDERR->autoflush(1);
finish_stderr_filter();
finish($status == 0 ? 0 : (($status >> 8) || 1));

# Prints the --json report and exits with STATUS.
sub finish {
    my ($status) = @_;
    if ($json) {
        $report{seconds} = time - $t0;
        my @fields = map {
            my $v = $report{$_};
            $_ eq 'fallback' ? "\"$_\":" . ($v ? 'true' : 'false')
                : $_ eq 'reason' ? "\"$_\":" . json_string($v)
                : "\"$_\":" . ($v + 0)
        } qw(closure fetched bytes seconds fallback reason);
        print '{', join(',', @fields), "}\n";
    }
    exit $status;
}

sub json_string {
    my $s = shift;
    $s =~ s/(["\\])/\\$1/g;
    $s =~ s/([\x00-\x1f])/sprintf('\\u%04x', ord $1)/ge;
    return "\"$s\"";
}

# Runs a command, dies unless it succeeds, returns its output lines.
sub lines {
    open(my $fh, '-|', @_) or die "cannot run $_[0]: $!\n";
    my @out = <$fh>;
    close $fh or die "'@_' failed (status " . ($? >> 8) . ")\n";
    chomp @out;
    return grep { $_ ne '' } @out;
}

# A string fit for a message: control and non-ASCII bytes escaped, at most 120 characters.
sub printable {
    my ($s) = @_;
    my $more = length($s) > 120 ? '...' : '';
    $s = substr($s, 0, 120);
    $s =~ s/([^\x20-\x7e])/sprintf('\\x%02x', ord $1)/ge;
    return $s . $more;
}

sub is_store_path { return $_[0] =~ $STORE_PATH }

# This host's Nix configuration (`nix show-config`): name => value.
sub nix_config {
    my %conf;
    for my $line (lines('nix', '--extra-experimental-features', 'nix-command', 'show-config')) {
        $conf{$1} = $2 if $line =~ /^(\S+) = (.*)$/;
    }
    return \%conf;
}

# The staging cache: --from, or the first ssh:// substituter Nix is configured with.
sub cache_url {
    my ($conf) = @_;
    return $from if defined $from;
    for my $s (split ' ', $conf->{substituters} // '') { return $s if $s =~ m{^ssh://} }
    die "no ssh:// substituter is configured on this host (nix show-config); pass --from\n";
}

# The keys this host trusts (`trusted-public-keys`): what every fetched path must be signed by.
sub trusted_keys {
    my ($conf) = @_;
    my @keys = split ' ', $conf->{'trusted-public-keys'} // '';
    die "this host trusts no signing key (trusted-public-keys is empty in nix show-config):"
        . " no fetched path could be verified\n" unless @keys;
    return @keys;
}

# The ssh command line for an ssh:// URL, as Nix builds it (ssh-key=, compress=); --compress
# compresses too.
sub ssh_command {
    my ($url) = @_;
    $url =~ m{^ssh://([^/?]+)(?:\?(.*))?$} or die "'" . printable($url) . "' is not an ssh:// store URL\n";
    my ($authority, $query) = ($1, $2 // '');
    # USER@HOST: never an ssh option (-oProxyCommand=...) or anything but a name.
    $authority =~ /\A(?:[A-Za-z0-9_][A-Za-z0-9._-]*@)?[A-Za-z0-9_\[][A-Za-z0-9._:\[\]-]*\z/
        or die "'" . printable($url) . "': '" . printable($authority) . "' is not USER\@HOST\n";
    my %param = map { my ($k, $v) = split /=/, $_, 2; ($k => unescape($v // '')) } split /&/, $query;
    die "the URL's base64-ssh-public-host-key is not supported: pin the host key in ssh_config\n"
        if exists $param{'base64-ssh-public-host-key'};
    my $program = $param{'remote-program'} // 'nix-store';
    $program =~ m{\A[A-Za-z0-9_/][A-Za-z0-9._/+-]*\z}
        or die "the URL's remote-program '" . printable($program) . "' is not a plain command\n";
    # Like Nix's own ssh store (-x -a), never a password prompt, and a bound on an unreachable host.
    my @cmd = ('ssh', '-x', '-a', '-T', '-o', 'BatchMode=yes', '-o', 'ConnectTimeout=20');
    if (($param{'ssh-key'} // '') ne '') {
        $param{'ssh-key'} =~ m{\A/[^\x00-\x1f\x7f]*\z}
            or die "the URL's ssh-key '" . printable($param{'ssh-key'}) . "' is not an absolute path\n";
        push @cmd, '-i', $param{'ssh-key'};
    }
    push @cmd, '-o', 'Compression=yes' if $compress || ($param{compress} // '') eq 'true';
    return (@cmd, '--', $authority, $program, '--serve');
}

sub unescape { my $s = shift; $s =~ s/%([0-9A-Fa-f]{2})/chr(hex $1)/ge; return $s }

# The wire format of the serve protocol: little-endian u64s, strings padded to 8 bytes.
sub u64 { pack('Q<', $_[0]) }
sub str { my $s = shift; u64(length $s) . $s . ("\0" x ((8 - length($s) % 8) % 8)) }
sub strs { u64(scalar @_) . join('', map { str($_) } @_) }

# A refusal of what staging sent: names staging and the field.
sub refuse { die "$staging sent $_[0]; refused, nothing from this session is imported\n" }

sub read_exact {
    my ($fh, $n) = @_;
    my $buf = '';
    while (length($buf) < $n) {
        my $got = read($fh, $buf, $n - length($buf), length $buf);
        die "$staging closed the connection (is the path still on staging? see ssh's message above)\n"
            unless $got;
    }
    return $buf;
}
sub read_u64 { unpack('Q<', read_exact($_[0], 8)) }
# A string of at most MAX bytes (refused before reading when longer), for FIELD.
sub read_str {
    my ($fh, $max, $field) = @_;
    my $n = read_u64($fh);
    refuse("a $field of $n bytes (at most $max)") if $n > $max;
    my $s = read_exact($fh, $n + (8 - $n % 8) % 8);
    return substr($s, 0, $n);
}
# A count of at most MAX (refused before reading the items), for FIELD.
sub read_count {
    my ($fh, $max, $field) = @_;
    my $n = read_u64($fh);
    refuse("$n ${field} (at most $max)") if $n > $max;
    return $n;
}
# A store path of this host's store directory ('' only when EMPTY_OK), for FIELD.
sub read_store_path {
    my ($fh, $field, $empty_ok) = @_;
    my $p = read_str($fh, $MAX_PATH_LENGTH, $field);
    return $p if $empty_ok && $p eq '';
    refuse("a $field '" . printable($p) . "' that is not a store path in $store_dir") unless is_store_path($p);
    return $p;
}

# The paths of @_ this host does not have.
sub invalid_here {
    my @out;
    while (my @chunk = splice(@_, 0, 1000)) {
        push @out, lines('nix-store', '--check-validity', '--print-invalid', '--', @chunk);
    }
    return @out;
}

sub base { my $p = shift; $p =~ s{^.*/}{}; return $p }

sub stop_children {
    for my $pid (keys %children) {
        kill 'TERM', $pid;
        waitpid($pid, 0);
        delete $children{$pid};
    }
    finish_stderr_filter();
}

# Staging's messages (ssh's stderr: its own and those of the command staging runs; in the
# fallback, all of nix-store's, which passes its ssh's on) reach ours only through this filter:
# line by line, each prefixed "nix-ssh-cache-fetch: LABEL: ", bytes other than printable ASCII as
# '?', lines cut at 512 characters, BUDGET bytes in all. So no escape sequence of staging's
# reaches a terminal or a log, and no line of staging's starts a line of ours (the step's stderr
# is read by the operator's side). Returns the handle to write to.
sub start_stderr_filter {
    my ($label, $budget) = @_;
    pipe(my $r, my $w) or die "pipe: $!\n";
    my $pid = fork() // die "fork: $!\n";
    if ($pid == 0) {
        $SIG{$_} = 'DEFAULT' for qw(INT TERM HUP);
        close $w;
        STDERR->autoflush(1);    # it ends with _exit, which flushes nothing
        my ($buf, $left) = ('', $budget);
        my $emit = sub {
            my ($line) = @_;
            return if $left <= 0;
            $line =~ s/[^\x20-\x7e]/?/g;
            print STDERR "$ME: $label: $line\n";
            $left -= length("$ME: $label: $line\n");
            print STDERR "$ME: $label: (more messages dropped)\n" if $left <= 0;
        };
        my $cut = 0;    # within a line already cut: dropped up to its end
        while (sysread($r, my $chunk, 4096)) {
            $buf .= $chunk;
            while ($buf =~ s/\A([^\n]*)\n//) { $emit->($1) unless $cut; $cut = 0 }
            if (length($buf) > 512) {
                $emit->(substr($buf, 0, 512) . '...') unless $cut;
                ($buf, $cut) = ('', 1);
            }
        }
        $emit->($buf) if $buf ne '' && !$cut;
        POSIX::_exit(0);
    }
    close $r;
    $stderr_filter = $pid;
    return $w;
}
# Waits for the filter to print what staging said (it ends when ssh has exited).
sub finish_stderr_filter {
    waitpid($stderr_filter, 0) if defined $stderr_filter;
    undef $stderr_filter;
}

sub fast {
    my $conf = nix_config();
    my $url = cache_url($conf);
    my @keys = trusted_keys($conf);
    $staging = "staging (" . printable($url) . ")";
    my @ssh = ssh_command($url);
    my $started = time;
    # ssh's stderr goes to the filter: open2 hands our STDERR to ssh, for that moment the filter's.
    my $filter_in = start_stderr_filter('staging', 1 << 16);
    open(my $stderr, '>&', \*STDERR) or die "dup stderr: $!\n";
    open(STDERR, '>&', $filter_in) or die "dup stderr: $!\n";
    my ($from_staging, $to_staging);
    my $pid = eval { open2($from_staging, $to_staging, @ssh) };
    open(STDERR, '>&', $stderr) or die "restore stderr: $!\n";
    STDERR->autoflush(1);    # reopened: buffered, unlike the STDERR Perl starts with
    close $filter_in;
    die $@ unless defined $pid;
    $children{$pid} = 1;
    binmode $_ for $from_staging, $to_staging;
    $to_staging->autoflush(1);
    # Greeting, then the closure of the roots: sent together, one round trip.
    print $to_staging u64($SERVE_MAGIC_1), u64($CLIENT_VERSION),
        u64($CMD_QUERY_CLOSURE), u64(0), strs(@roots);
    read_u64($from_staging) == $SERVE_MAGIC_2
        or die "$url did not answer with the nix-store --serve protocol\n";
    my $version = read_u64($from_staging);
    die sprintf("staging's nix-store --serve speaks protocol %d.%d; 2.4 or later is needed\n",
        $version >> 8, $version & 0xff) if ($version >> 8) != 2 || ($version & 0xff) < 4;
    my @closure = read_closure($from_staging);
    my @missing = invalid_here(@closure);
    @report{qw(closure fetched)} = (scalar @closure, scalar @missing);
    say_(sprintf('%d paths in the closure, %d to fetch from %s', scalar @closure, scalar @missing, $url));
    if (@missing) {
        -d $work or die "work directory $work does not exist (--work-dir)\n";
        my $cache = tempdir("$ME.XXXXXX", DIR => $work, CLEANUP => 1);
        my ($bytes, $verifier) = transfer($from_staging, $to_staging, $cache, \@keys, \@closure, @missing);
        $report{bytes} = $bytes;
        close $to_staging;
        waitpid($pid, 0);
        delete $children{$pid};
        finish_stderr_filter();
        say_(sprintf('received %d paths, %.1f MiB in %d s; adding them (Nix checks their signatures)',
            scalar @missing, $bytes / 1048576, time - $started));
        finish_signature_check($verifier);
        # `nix copy` checks every NAR against its NarHash; require-sigs true makes it check the
        # signatures again whatever nix.conf says. Faster than `nix-store --realise` from the
        # same file:// cache (no substitution goals): 395 against 546 ms for 300 paths.
        system('nix', '--extra-experimental-features', 'nix-command', 'copy',
            '--option', 'require-sigs', 'true', '--from', "file://$cache", '--', @roots) == 0
            or die "nix copy from the fetched paths failed (status " . ($? >> 8) . ")\n";
    } else {
        close $to_staging;
        waitpid($pid, 0);
        delete $children{$pid};
        finish_stderr_filter();
    }
    # Every root valid now (also when nothing was missing).
    my @left = invalid_here(@roots);
    die "still not valid here: @left\n" if @left;
    return 1;
}

# The closure staging sends: distinct store paths, at most $MAX_PATHS, every root among them.
sub read_closure {
    my ($in) = @_;
    my $n = read_count($in, $MAX_PATHS, 'paths in the closure');
    my (%seen, @closure);
    for (1 .. $n) {
        my $p = read_store_path($in, 'closure entry');
        refuse("the closure entry $p twice") if $seen{$p}++;
        push @closure, $p;
    }
    for my $root (@roots) {
        refuse("a closure of " . scalar(@closure) . " paths without $root, which was asked for")
            unless $seen{$root};
    }
    return @closure;
}

# One path info (serve protocol >= 2.4), every field checked: PATH is one of the paths asked for
# (%$asked) and not sent before (%$got), its references are in the closure (%$closure).
sub read_info {
    my ($in, $path, $asked, $got, $closure) = @_;
    refuse("the info of $path, which was not asked for") unless $asked->{$path};
    refuse("the info of $path twice") if $got->{$path};
    my %i = (path => $path);
    $i{deriver} = read_store_path($in, "deriver of $path", 1);
    my $nrefs = read_count($in, scalar(keys %$closure), "references of $path");
    my %refs;
    for (1 .. $nrefs) {
        my $r = read_store_path($in, "reference of $path");
        refuse("the reference $r of $path, which is not in the closure it sent") unless $closure->{$r};
        $refs{$r} = 1;
    }
    $i{references} = [sort keys %refs];
    read_u64($in);    # download size
    $i{narSize} = read_u64($in);
    refuse("narSize 0 for $path") if $i{narSize} == 0;
    $i{narHash} = read_str($in, $MAX_HASH_LENGTH, "narHash of $path");
    refuse("the narHash '" . printable($i{narHash}) . "' for $path (not sha256 in base32 or base16)")
        unless $i{narHash} =~ /\Asha256:(?:[0-9a-df-np-sv-z]{52}|[0-9a-f]{64})\z/;
    $i{ca} = read_str($in, $MAX_CA_LENGTH, "CA of $path");
    refuse("the CA '" . printable($i{ca}) . "' for $path")
        unless $i{ca} eq ''
        || $i{ca} =~ /\A(?:text:sha256|fixed:(?:r:)?(?:md5|sha1|sha256|sha512)):[0-9a-df-np-sv-z]{1,128}\z/;
    my $nsigs = read_count($in, $MAX_SIGS, "signatures for $path");
    $i{sigs} = [];
    for (1 .. $nsigs) {
        my $sig = read_str($in, $MAX_SIG_LENGTH, "signature for $path");
        # NAME:BASE64 of an ed25519 signature (64 bytes), the only kind Nix makes or checks.
        refuse("the signature '" . printable($sig) . "' for $path (not NAME:BASE64 of 64 bytes)")
            unless $sig =~ m{\A[A-Za-z0-9._+\-]{1,128}:[A-Za-z0-9+/]{86}==\z};
        push @{ $i{sigs} }, $sig;
    }
    return \%i;
}

# Bytes available in DIR's file system, and its size (`df -P -k`).
sub disk_space {
    my ($dir) = @_;
    my @df = lines('df', '-P', '-k', '--', $dir);
    $df[-1] =~ /\s(\d+)\s+(\d+)\s+(\d+)\s+\d+%\s/ or die "cannot read the free space of $dir from df\n";
    return ($3 * 1024, ($1) * 1024);
}

# Infos and NARs of @missing, asked in one pipelined batch (written by a child process, so that a
# long request list cannot block against staging's answers); written as a file:// binary cache.
# Returns the NAR bytes and the signature check (start_signature_check) running meanwhile.
sub transfer {
    my ($in, $out, $cache, $keys, $closure_list, @missing) = @_;
    my $writer = fork() // die "fork: $!\n";
    if ($writer == 0) {
        $SIG{$_} = 'DEFAULT' for qw(INT TERM HUP);
        close $in;
        print $out u64($CMD_QUERY_PATH_INFOS), strs(@missing);
        print $out u64($CMD_DUMP_STORE_PATH), str($_) for @missing;
        close $out;
        POSIX::_exit(0);
    }
    $children{$writer} = 1;
    my %closure = map { $_ => 1 } @$closure_list;
    my %asked = map { $_ => 1 } @missing;
    my %info;
    # At most one info per path asked for, then the empty string.
    while ((my $path = read_store_path($in, 'path info', 1)) ne '') {
        $info{$path} = read_info($in, $path, \%asked, \%info, \%closure);
    }
    my $total = 0;
    for my $path (@missing) {
        my $i = $info{$path} or die "staging does not have $path (garbage-collected there?)\n";
        $total += $i->{narSize};
    }
    # Room for every NAR before the first byte is written, leaving the file system some air.
    my ($free, $size) = disk_space($work);
    my $reserve = $size / 10 < $MAX_RESERVE ? $size / 10 : $MAX_RESERVE;
    if ($total + $reserve > $free) {
        my ($big) = sort { $info{$b}{narSize} <=> $info{$a}{narSize} } @missing;
        refuse(sprintf('NARs of %.0f bytes in all (the largest, narSize %.0f of %s), more than %s has'
            . ' room for (%.0f bytes free, %.0f kept free): free space or pass --work-dir',
            $total, $info{$big}{narSize}, $big, $work, $free, $reserve));
    }
    mkdir "$cache/nar" or die "mkdir $cache/nar: $!\n";
    open(my $ci, '>', "$cache/nix-cache-info") or die "$cache: $!\n";
    print $ci "StoreDir: $store_dir\n";
    close $ci;
    # The infos first: their signatures are checked while the NARs arrive.
    for my $path (@missing) {
        my $i = $info{$path};
        my $hash = (split /-/, base($path))[0];
        open(my $ni, '>', "$cache/$hash.narinfo") or die "$cache: $!\n";
        print $ni "StorePath: $path\nURL: nar/$hash.nar\nCompression: none\n",
            "NarHash: $i->{narHash}\nNarSize: $i->{narSize}\n",
            'References: ', join(' ', map { base($_) } @{ $i->{references} }), "\n";
        print $ni 'Deriver: ', base($i->{deriver}), "\n" if $i->{deriver} ne '';
        print $ni "CA: $i->{ca}\n" if $i->{ca} ne '';
        print $ni "Sig: $_\n" for @{ $i->{sigs} };
        close $ni or die "writing $cache/$hash.narinfo: $!\n";
    }
    my $verifier = start_signature_check($cache, $keys, @missing);
    my $bytes = 0;
    for my $path (@missing) {
        my $hash = (split /-/, base($path))[0];
        open(my $nar, '>', "$cache/nar/$hash.nar") or die "$cache: $!\n";
        binmode $nar;
        my $left = $info{$path}{narSize};
        while ($left > 0) {
            my $n = $left < 1 << 20 ? $left : 1 << 20;
            print $nar read_exact($in, $n);
            $left -= $n;
        }
        close $nar or die "writing $cache/nar/$hash.nar: $!\n";
        $bytes += $info{$path}{narSize};
    }
    waitpid($writer, 0);
    delete $children{$writer};
    return ($bytes, $verifier);
}

# Every fetched path must carry a valid signature by a key this host trusts (or be
# content-addressed, as Nix accepts), checked before anything is imported: `nix store verify`
# on the fetched infos (--no-contents: the NARs need not be there yet) counts valid signatures
# whatever require-sigs says. Runs in the background (its messages in the cache directory);
# returns [pid, log].
sub start_signature_check {
    my ($cache, $keys, @paths) = @_;
    my $log = "$cache/verify.log";
    my $pid = fork() // die "fork: $!\n";
    if ($pid == 0) {
        $SIG{$_} = 'DEFAULT' for qw(INT TERM HUP);
        open(STDOUT, '>', $log) or POSIX::_exit(4);
        open(STDERR, '>&', \*STDOUT) or POSIX::_exit(4);
        my $status = 0;
        while (my @chunk = splice(@paths, 0, 1000)) {
            system('nix', '--extra-experimental-features', 'nix-command', 'store', 'verify',
                '--store', "file://$cache", '--no-contents', '--sigs-needed', '1',
                '--option', 'trusted-public-keys', join(' ', @$keys), '--', @chunk);
            $status ||= $? == -1 ? 127 : ($? >> 8) || ($? ? 4 : 0);
        }
        POSIX::_exit($status);
    }
    $children{$pid} = 1;
    return [$pid, $log];
}

# Waits for the signature check; refuses the paths it found untrusted, naming them.
sub finish_signature_check {
    my ($pid, $log) = @{ $_[0] };
    waitpid($pid, 0);
    delete $children{$pid};
    my $status = $? >> 8;
    my @untrusted;
    if (open(my $fh, '<', $log)) {
        while (my $line = <$fh>) {
            if ($line =~ /^path '([^']*)' is untrusted$/) { push @untrusted, $1 }
            elsif ($line !~ /^checking '/) { print STDERR $line unless $quiet }
        }
    }
    return if $status == 0;
    refuse(sprintf('%s, which lacks a valid signature by a key in trusted-public-keys%s',
        printable($untrusted[0]), @untrusted > 1 ? ' (and ' . (@untrusted - 1) . ' more paths)' : ''))
        if @untrusted;
    die "nix store verify could not check the signatures of the fetched paths (status $status)\n";
}
