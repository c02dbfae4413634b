#!/usr/bin/perl
# A hostile staging for the closure fetcher's e2e tests (tests/e2e/fetchHostile.test.ts): run as
# the serve user's ForceCommand on a test staging host. Nix's own ssh:// substituter (the
# fetcher's fallback; it asks for `nix-store --serve --write`) gets the real `nix-store --serve`
# (read-only, as the component's ForceCommand).
# The fetcher (`nix-store --serve`) talks to a man in the middle: this script asks the real
# `nix-store --serve` the same questions and answers with the real answers spoiled as the mode
# in /etc/nsc-hostile/mode says (one word):
#   option    closure: `--option plugin-files /tmp/nsc-payload.so` before the real entries
#   outside   closure: the real entries and /etc/passwd
#   newline   closure: the real entries and the first one with "\nStorePath: ..." appended
#   count     closure: announces 2^62 entries, sends none
#   long      closure: one entry announced as 2^33 bytes, 64 bytes sent
#   flood     path infos: the first real info sent 10^6 times
#   narsize   path infos: the first path's narSize is 2^62 (its real NAR follows, then EOF)
#   deriver   path infos: the first path's deriver ends in "\x1b[2J" (a terminal escape)
#   stderr    nothing spoiled, but first a forged sudo marker line (ssh.ts's probe), a terminal
#             escape, a line of 100 kB and 2000 more lines on stderr (to the fallback's
#             substituter too)
#   honest    nothing spoiled
# Test-only code: never installed by the component.
use strict;
use warnings;
use IPC::Open2 qw(open2);

my $mode = 'honest';
if (open(my $f, '<', '/etc/nsc-hostile/mode')) { $mode = <$f> // 'honest'; chomp $mode }
if ($mode eq 'stderr') {
    print STDERR "nix-ssh-cache-sudo: direct /nix/store/", 'x' x 32, "-payload/bin/sh\n";
    print STDERR "\x1b[2J\x1b]0;owned\x07", 'x' x 100_000, "\n";
    print STDERR 'y' x 99, "\n" for 1 .. 2000;
}
exec('nix-store', '--serve') if ($ENV{SSH_ORIGINAL_COMMAND} // '') =~ /--write/;
$SIG{PIPE} = 'DEFAULT';

my $pid = open2(my $real_out, my $real_in, 'nix-store', '--serve');
binmode $_ for \*STDIN, \*STDOUT, $real_out, $real_in;
STDOUT->autoflush(1);
$real_in->autoflush(1);

sub u64 { pack('Q<', $_[0]) }
sub str { my $s = shift; u64(length $s) . $s . ("\0" x ((8 - length($s) % 8) % 8)) }
sub strs { u64(scalar @_) . join('', map { str($_) } @_) }
sub read_exact {
    my ($fh, $n) = @_;
    my $buf = '';
    while (length($buf) < $n) {
        my $got = read($fh, $buf, $n - length($buf), length $buf);
        exit 0 unless $got;
    }
    return $buf;
}
sub read_u64 { unpack('Q<', read_exact($_[0], 8)) }
sub read_str { my ($fh) = @_; my $n = read_u64($fh); substr(read_exact($fh, $n + (8 - $n % 8) % 8), 0, $n) }
sub read_strs { my ($fh) = @_; my $n = read_u64($fh); return map { read_str($fh) } 1 .. $n }

# Greeting: the client's magic and version go to the real server, its answer back.
print $real_in read_exact(\*STDIN, 16);
print STDOUT read_exact($real_out, 16);

my %nar_size;    # real NAR sizes, to forward exactly one NAR per dump
for (;;) {
    my $cmd = read_u64(\*STDIN);
    if ($cmd == 7) {    # query closure
        my $include_outputs = read_u64(\*STDIN);
        my @paths = read_strs(\*STDIN);
        print $real_in u64(7), u64($include_outputs), strs(@paths);
        my @closure = read_strs($real_out);
        if ($mode eq 'option') { unshift @closure, '--option', 'plugin-files', '/tmp/nsc-payload.so' }
        elsif ($mode eq 'outside') { push @closure, '/etc/passwd' }
        elsif ($mode eq 'newline') { push @closure, "$closure[0]\nStorePath: $closure[0]" }
        elsif ($mode eq 'count') { print STDOUT u64(1 << 62); exit 0 }
        elsif ($mode eq 'long') { print STDOUT u64(1), u64(1 << 33), '/nix/store/' x 6; exit 0 }
        print STDOUT strs(@closure);
    } elsif ($cmd == 2) {    # query path infos
        my @paths = read_strs(\*STDIN);
        print $real_in u64(2), strs(@paths);
        my @infos;
        while ((my $path = read_str($real_out)) ne '') {
            my %i = (path => $path, deriver => read_str($real_out), refs => [read_strs($real_out)]);
            $i{download} = read_u64($real_out);
            $i{nar} = read_u64($real_out);
            @i{qw(hash ca)} = (read_str($real_out), read_str($real_out));
            $i{sigs} = [read_strs($real_out)];
            $nar_size{$path} = $i{nar};
            push @infos, \%i;
        }
        if ($mode eq 'narsize') { $infos[0]{nar} = 1 << 62 }
        elsif ($mode eq 'deriver') { $infos[0]{deriver} = "$infos[0]{path}.drv\x1b[2J" }
        my $info = sub {
            my ($i) = @_;
            str($i->{path}) . str($i->{deriver}) . strs(@{ $i->{refs} }) . u64($i->{download})
                . u64($i->{nar}) . str($i->{hash}) . str($i->{ca}) . strs(@{ $i->{sigs} });
        };
        if ($mode eq 'flood') {
            my $one = $info->($infos[0]);
            print STDOUT $one x 1000 for 1 .. 1000;
        }
        print STDOUT $info->($_) for @infos;
        print STDOUT str('');
    } elsif ($cmd == 3) {    # dump store path
        my $path = read_str(\*STDIN);
        print $real_in u64(3), str($path);
        my $left = $nar_size{$path} // exit 0;
        while ($left > 0) {
            my $n = $left < 65536 ? $left : 65536;
            print STDOUT read_exact($real_out, $n);
            $left -= $n;
        }
        exit 0 if $mode eq 'narsize';
    } else {
        exit 0;
    }
}
