#!/usr/bin/env perl
# nix-ssh-cache-fetch (production): substitute the closure of store paths from the staging cache
# in one SSH session, instead of Nix's two round trips per path.
#
# Usage: nix-ssh-cache-fetch [--from ssh://USER@HOST] [--work-dir DIR] [--no-fallback] [--quiet]
#                            PATH...
#   PATH: a store path, or a store derivation (`.drv`: its outputs are fetched).
#   --from: the staging cache; default: the first ssh:// substituter of this host's Nix
#     configuration (`nix show-config`), the one nix-ssh-cache configures.
#   --work-dir: where the fetched NARs wait until Nix adds them (uncompressed: room for the
#     closure); default: $NIX_SSH_CACHE_FETCH_DIR, else /var/tmp. Removed afterwards.
#   --no-fallback: fail when the one-session path fails, instead of running
#     `nix-store --realise` through the configured substituters.
#   --json: print one JSON object on stdout at the end: {"closure":N,"fetched":M,"bytes":B,
#     "seconds":S,"fallback":false|true,"reason":"why the fast path failed"} (messages stay on
#     stderr).
#
# How: over `nix-store --serve` (the protocol of ssh:// substituters; staging's serve user is
# confined to it by sshd's ForceCommand, nothing changes there) it asks for the closure of PATH
# (one round trip), then asks for the path infos of the paths this host lacks and their NARs in
# one pipelined batch (one round trip plus the bytes). The NARs and infos (with staging's
# signatures) become a temporary file:// binary cache, from which `nix copy` adds them: Nix
# checks every NAR hash and signature against this host's trusted-public-keys, as for any
# substituter. Runs as root, like the deploy it prepares (root's ssh configuration holds the
# pinned host key and the key staging authorised), with Perl's core modules (Debian's perl-base;
# NixOS's default packages).
# Exit status: 0 when every PATH is valid on this host afterwards.
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

my ($from, $fallback, $quiet, $json) = (undef, 1, 0, 0);
my %report = (closure => 0, fetched => 0, bytes => 0, fallback => 0, reason => '');
my $t0 = time;
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
        . " PATH...\n";
}
sub usage { print STDERR "$ME: $_[0]\n", usage_text(); exit 2 }
sub say_ { print STDERR "$ME: @_\n" unless $quiet }

# The store paths to make valid: a .drv stands for its outputs.
my $store_dir = $ENV{NIX_STORE_DIR} // '/nix/store';
my @roots;
for my $p (@args) {
    die "$ME: '$p' is not a path in $store_dir\n" unless index($p, "$store_dir/") == 0;
    if ($p =~ /\.drv$/) { push @roots, lines('nix-store', '--query', '--outputs', $p) }
    else { push @roots, $p }
}

my ($ok, $why) = (0, '');
if ($> != 0) {
    $why = "not root: run it as root (root's ssh configuration and key reach the cache)";
} else {
    $ok = eval { fast(); 1 };
    $why = $@ unless $ok;
    chomp $why;
}
finish(0) if $ok;
die "$ME: the one-session fetch failed: $why\n" unless $fallback;
say_("the one-session fetch failed: $why; falling back to nix-store --realise through the configured substituters");
@report{qw(fallback reason)} = (1, $why);
# nix-store prints the realised paths on stdout: keep stdout for the --json report.
open(my $stdout, '>&', \*STDOUT) or die "$ME: dup stdout: $!\n";
open(STDOUT, '>&', \*STDERR) or die "$ME: dup stderr: $!\n";
my $status = system('nix-store', '--realise', @roots);
open(STDOUT, '>&', $stdout) or die "$ME: restore stdout: $!\n";
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

# The staging cache: --from, or the first ssh:// substituter Nix is configured with.
sub cache_url {
    return $from if defined $from;
    for my $line (lines('nix', '--extra-experimental-features', 'nix-command', 'show-config')) {
        next unless $line =~ /^substituters = (.*)$/;
        for my $s (split ' ', $1) { return $s if $s =~ m{^ssh://} }
    }
    die "no ssh:// substituter is configured on this host (nix show-config); pass --from\n";
}

# The ssh command line for an ssh:// URL, as Nix builds it (ssh-key=, compress=).
sub ssh_command {
    my ($url) = @_;
    $url =~ m{^ssh://([^/?]+)(?:\?(.*))?$} or die "'$url' is not an ssh:// store URL\n";
    my ($authority, $query) = ($1, $2 // '');
    my %param = map { my ($k, $v) = split /=/, $_, 2; ($k => unescape($v // '')) } split /&/, $query;
    die "the URL's base64-ssh-public-host-key is not supported: pin the host key in ssh_config\n"
        if exists $param{'base64-ssh-public-host-key'};
    # Like Nix's own ssh store (-x -a), never a password prompt, and a bound on an unreachable host.
    my @cmd = ('ssh', '-x', '-a', '-T', '-o', 'BatchMode=yes', '-o', 'ConnectTimeout=20');
    push @cmd, '-i', $param{'ssh-key'} if ($param{'ssh-key'} // '') ne '';
    push @cmd, '-C' if ($param{compress} // '') eq 'true';
    return (@cmd, $authority, $param{'remote-program'} // 'nix-store', '--serve');
}

sub unescape { my $s = shift; $s =~ s/%([0-9A-Fa-f]{2})/chr(hex $1)/ge; return $s }

# The wire format of the serve protocol: little-endian u64s, strings padded to 8 bytes.
sub u64 { pack('Q<', $_[0]) }
sub str { my $s = shift; u64(length $s) . $s . ("\0" x ((8 - length($s) % 8) % 8)) }
sub strs { u64(scalar @_) . join('', map { str($_) } @_) }

sub read_exact {
    my ($fh, $n) = @_;
    my $buf = '';
    while (length($buf) < $n) {
        my $got = read($fh, $buf, $n - length($buf), length $buf);
        die "staging closed the connection (is the path still on staging? see ssh's message above)\n"
            unless $got;
    }
    return $buf;
}
sub read_u64 { unpack('Q<', read_exact($_[0], 8)) }
sub read_str {
    my ($fh) = @_;
    my $n = read_u64($fh);
    die "protocol error: a string of $n bytes\n" if $n > 1 << 20;
    my $s = read_exact($fh, $n + (8 - $n % 8) % 8);
    return substr($s, 0, $n);
}
sub read_strs { my ($fh) = @_; my $n = read_u64($fh); return map { read_str($fh) } 1 .. $n }

# The paths of @_ this host does not have.
sub invalid_here {
    my @out;
    while (my @chunk = splice(@_, 0, 1000)) {
        push @out, lines('nix-store', '--check-validity', '--print-invalid', @chunk);
    }
    return @out;
}

sub base { my $p = shift; $p =~ s{^.*/}{}; return $p }

sub fast {
    my $url = cache_url();
    my @ssh = ssh_command($url);
    my $started = time;
    my $pid = open2(my $from_staging, my $to_staging, @ssh);
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
    my @closure = read_strs($from_staging);
    my @missing = invalid_here(@closure);
    @report{qw(closure fetched)} = (scalar @closure, scalar @missing);
    say_(sprintf('%d paths in the closure, %d to fetch from %s', scalar @closure, scalar @missing, $url));
    if (@missing) {
        -d $work or die "work directory $work does not exist (--work-dir)\n";
        my $cache = tempdir("$ME.XXXXXX", DIR => $work, CLEANUP => 1);
        my $bytes = transfer($from_staging, $to_staging, $cache, @missing);
        $report{bytes} = $bytes;
        close $to_staging;
        waitpid($pid, 0);
        say_(sprintf('received %d paths, %.1f MiB in %d s; adding them (Nix checks their signatures)',
            scalar @missing, $bytes / 1048576, time - $started));
        # `nix copy` checks signatures (no --no-check-sigs): the store refuses a path without a
        # signature by a key in trusted-public-keys. Faster than `nix-store --realise` from the
        # same file:// cache (no substitution goals): 395 against 546 ms for 300 paths.
        system('nix', '--extra-experimental-features', 'nix-command', 'copy',
            '--from', "file://$cache", @roots) == 0
            or die "nix copy from the fetched paths failed (status " . ($? >> 8) . ")\n";
    } else {
        close $to_staging;
        waitpid($pid, 0);
    }
    # Every root valid now (also when nothing was missing).
    my @left = invalid_here(@roots);
    die "still not valid here: @left\n" if @left;
    return 1;
}

# Infos and NARs of @missing, asked in one pipelined batch (written by a child process, so that a
# long request list cannot block against staging's answers); written as a file:// binary cache.
sub transfer {
    my ($in, $out, $cache, @missing) = @_;
    my $writer = fork() // die "fork: $!\n";
    if ($writer == 0) {
        close $in;
        print $out u64($CMD_QUERY_PATH_INFOS), strs(@missing);
        print $out u64($CMD_DUMP_STORE_PATH), str($_) for @missing;
        close $out;
        POSIX::_exit(0);
    }
    my %info;
    while ((my $path = read_str($in)) ne '') {
        my %i = (path => $path, deriver => read_str($in));
        $i{references} = [read_strs($in)];
        read_u64($in);    # download size
        $i{narSize} = read_u64($in);
        $i{narHash} = read_str($in);
        $i{ca} = read_str($in);
        $i{sigs} = [read_strs($in)];
        # Every field goes into a narinfo line: no line breaks (Nix checks the rest).
        for my $field ($path, $i{deriver}, @{ $i{references} }, $i{narHash}, $i{ca}, @{ $i{sigs} }) {
            die "protocol error: a line break in the info of $path\n" if $field =~ /[\r\n]/;
        }
        $info{$path} = \%i;
    }
    mkdir "$cache/nar" or die "mkdir $cache/nar: $!\n";
    open(my $ci, '>', "$cache/nix-cache-info") or die "$cache: $!\n";
    print $ci "StoreDir: $store_dir\n";
    close $ci;
    my $bytes = 0;
    for my $path (@missing) {
        my $i = $info{$path} or die "staging does not have $path (garbage-collected there?)\n";
        my $hash = (split /-/, base($path))[0];
        open(my $nar, '>', "$cache/nar/$hash.nar") or die "$cache: $!\n";
        binmode $nar;
        my $left = $i->{narSize};
        while ($left > 0) {
            my $n = $left < 1 << 20 ? $left : 1 << 20;
            print $nar read_exact($in, $n);
            $left -= $n;
        }
        close $nar or die "writing $cache/nar/$hash.nar: $!\n";
        $bytes += $i->{narSize};
        open(my $ni, '>', "$cache/$hash.narinfo") or die "$cache: $!\n";
        print $ni "StorePath: $path\nURL: nar/$hash.nar\nCompression: none\n",
            "NarHash: $i->{narHash}\nNarSize: $i->{narSize}\n",
            'References: ', join(' ', map { base($_) } @{ $i->{references} }), "\n";
        print $ni 'Deriver: ', base($i->{deriver}), "\n" if $i->{deriver} ne '';
        print $ni "CA: $i->{ca}\n" if $i->{ca} ne '';
        print $ni "Sig: $_\n" for @{ $i->{sigs} };
        close $ni or die "writing $cache/$hash.narinfo: $!\n";
    }
    waitpid($writer, 0);
    return $bytes;
}
