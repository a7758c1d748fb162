from midpay.cli import main

main()
