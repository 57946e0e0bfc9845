# Latency per login versus enrolled users, for bench/run. Variables: data (input), out (PNG).
set terminal pngcairo size 900,560 font "sans,10" noenhanced
set output out
set title "One login (pam_start → pam_authenticate → pam_end): p50 solid, p99 dashed"
set xlabel "enrolled users"
set ylabel "ms per login"
set logscale xy
set xrange [500:2000000]
set xtics ("1k" 1000, "10k" 10000, "100k" 100000, "1M" 1000000)
set grid
set key top left
set datafile missing "NaN"
plot data using 1:2 with linespoints lw 2 pt 7 lc rgb "#1b7837" title "kron p50", \
     data using 1:3 with linespoints lw 1 pt 6 dt 2 lc rgb "#1b7837" title "kron p99", \
     data using 1:4 with linespoints lw 2 pt 5 lc rgb "#2166ac" title "google-authenticator p50", \
     data using 1:5 with linespoints lw 1 pt 4 dt 2 lc rgb "#2166ac" title "google-authenticator p99", \
     data using 1:6 with linespoints lw 2 pt 9 lc rgb "#b2182b" title "pam_oath p50", \
     data using 1:7 with linespoints lw 1 pt 8 dt 2 lc rgb "#b2182b" title "pam_oath p99"
