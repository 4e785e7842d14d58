from backendai import __version__


def product(request):
    return {"product_name": "Backend.AI Control Panel", "product_version": __version__}
